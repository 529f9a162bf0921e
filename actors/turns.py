"""The two turns of a trace, in token ids. The one place the self-correction prompt is rendered.

x2 = x1 + y1 + p: attempt 1 goes in exactly as sampled (its EOS included), so the row the learner
scores, [x1, y1, p, y2], is token for token what the engine conditioned attempt 2 on.

There are no role markers and no chat template: a trace is its turns' tokens one after another, and
the serving API renders a chat conversation the same way (`conversation`).
"""
from __future__ import annotations

from graders.base import Task
from protos import Problem


class Turns:
    def __init__(self, tokenizer, task: Task):
        self._tokenizer = tokenizer
        self.instruction_ids: list[int] = self._encode(task.instruction)

    def _encode(self, text: str) -> list[int]:
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def first(self, problem: Problem) -> list[int]:
        return self._encode(problem.prompt)

    def conversation(self, messages: list[tuple[str, str]]) -> list[int]:
        """A chat conversation, (role, content) first to last, as a first prompt x1 in the turns' rendering:
        each message's tokens in order, an assistant message followed by EOS as a generated attempt is.
        So one user message is `first`, and [user x1, assistant y1, user instruction] is `second(x1, y1)`
        when y1's text encodes back to its tokens. A system message is text like any other: the model
        was trained on none, and nothing marks it."""
        ids: list[int] = []
        for role, content in messages:
            ids += self._encode(content) + ([self._tokenizer.eos_token_id] if role == "assistant" else [])
        return ids

    def second(self, first_prompt: list[int], attempt1: list[int]) -> list[int]:
        return list(first_prompt) + list(attempt1) + self.instruction_ids

    def text(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=True)
