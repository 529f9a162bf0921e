"""The two turns of a trace, in token ids. The one place the self-correction prompt is rendered.

x2 = x1 + y1 + p: attempt 1 goes in exactly as sampled (its EOS included), so the row the learner
scores, [x1, y1, p, y2], is token for token what the engine conditioned attempt 2 on.
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

    def second(self, first_prompt: list[int], attempt1: list[int]) -> list[int]:
        return list(first_prompt) + list(attempt1) + self.instruction_ids

    def text(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=True)
