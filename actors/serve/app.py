"""The self-correcting model behind the serving API: k attempts per request.

`SelfCorrection` is the logic, testable without Serve: it checks a request, renders every attempt
with actors.turns.Turns (the rendering the policy was trained on: attempt k's prompt is attempt
k-1's prompt + attempt k-1 as generated + the task's instruction), and reaches the engine through
an async `generate` function. The Serve deployment (actors/serve/deployment.py) makes that function
a batcher, so attempts of concurrent requests share one engine call; `generate_batch` is what such
a batch runs.

A streamed request passes `run` a `progress` (actors/serve/streaming.py's Stream): each choice's
earlier attempts once its last attempt starts, then that attempt's tokens from the engine's
thread as each decoding step makes them.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Awaitable, Callable, NamedTuple, Protocol

from actors.engines import Generation, GenerationEngine, SamplingParams, TokenSink, make_engine
from actors.serve.checkpoint import ServedModel
from actors.serve.protocol import APIError, Prompt
from actors.turns import Turns
from graders.base import Task


class EngineCall(NamedTuple):
    """One `generate` call of a request, as a batch holds it: calls with equal params and key share one
    engine call. on_tokens(i, ids) hears prompts[i]'s tokens as they are generated (a streamed last attempt)."""

    prompts: list[list[int]]
    params: SamplingParams
    key: object
    on_tokens: TokenSink | None = None


Generate = Callable[[list[list[int]], SamplingParams, object, TokenSink | None], Awaitable[list[Generation]]]


@dataclass
class Attempt:
    token_ids: list[int]  # what the next attempt's prompt holds: as generated, up to a stop string
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    generated: int  # tokens the engine generated (a stop string may cut some off the end)

    def as_dict(self, token_ids: bool = False) -> dict:
        return {"text": self.text, "finish_reason": self.finish_reason, "tokens": len(self.token_ids),
                **({"token_ids": self.token_ids} if token_ids else {})}


@dataclass
class Choice:
    attempts: list[Attempt]
    truncated: list[str] = field(default_factory=list)  # each attempt cut or left out to fit the context, and why

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    def self_correction(self, attempts: list[Attempt] | None = None, token_ids: bool = False) -> dict:
        """The response's extension object: every attempt (or the ones given), first to last."""
        return {"attempts": [a.as_dict(token_ids) for a in (self.attempts if attempts is None else attempts)],
                "truncated": self.truncated}


class Progress(Protocol):
    """What a streamed request hears while `run` runs (actors/serve/streaming.py's Stream)."""

    def begin(self, index: int, earlier: "Choice") -> None:
        """Choice `index`'s last attempt starts now; `earlier` holds the attempts before it and the
        final truncation notes."""

    def tokens(self, index: int, token_ids: list[int]) -> None:
        """The last attempt's newest tokens: from the engine's thread while it generates."""


def first_stop(text: str, stop: list[str]) -> int | None:
    """Where the first stop string in `text` begins, if one does."""
    cuts = [text.find(s) for s in stop if s in text]
    return min(cuts) if cuts else None


class SelfCorrection:
    def __init__(self, engine: GenerationEngine, served: ServedModel, task: Task, max_attempts: int):
        self.engine, self.served, self.max_attempts = engine, served, max_attempts
        self.turns = Turns(engine.tokenizer, task)

    @classmethod
    def load(cls, served: ServedModel, engine: str, max_attempts: int, **engine_kwargs) -> "SelfCorrection":
        from graders.registry import make_task

        return cls(make_engine(engine, str(served.model_dir), **engine_kwargs),
                   served, make_task(served.task_name, served.task_params), max_attempts)

    def check(self, model: str, prompts: list[Prompt], attempts: int, max_tokens: int | None) -> list[list[int]]:
        """Each prompt's first turn x1 in tokens, or the APIError naming what is wrong."""
        if model != self.served.name:
            raise APIError(404, f"The model `{model}` does not exist; this server serves `{self.served.name}`",
                           "model", "model_not_found")
        if not 1 <= attempts <= self.max_attempts:
            raise APIError(400, f"attempts must be between 1 and {self.max_attempts} (got {attempts})", "attempts")
        return [self._first_turn(prompt, max_tokens, alone=len(prompts) == 1) for prompt in prompts]

    def _first_turn(self, prompt: Prompt, max_tokens: int | None, alone: bool) -> list[int]:
        if not prompt.messages[-1][1].strip():
            raise APIError(400, f"{prompt.field}: the prompt is empty", prompt.param)
        x1 = self.turns.conversation(prompt.messages)
        room = self.served.context - len(x1)
        if room < 1:
            raise APIError(400, f"{prompt.field}: the prompt takes {len(x1)} tokens, and this model's context is "
                           f"{self.served.context} tokens", prompt.param, "context_length_exceeded")
        max_tokens = max_tokens or self.served.max_tokens
        if max_tokens > room:
            which = "the prompt" if alone else prompt.field  # a list's error says which prompt
            raise APIError(400, f"max_tokens: this model's context is {self.served.context} tokens and {which} takes "
                           f"{len(x1)}, so an attempt has at most {room} tokens, but max_tokens is {max_tokens}",
                           "max_tokens", "context_length_exceeded")
        return x1

    async def run(self, x1s: list[list[int]], n: int, attempts: int, max_tokens: int | None, temperature: float,
                  top_p: float, seed: int | None, stop: list[str], generate: Generate,
                  progress: Progress | None = None) -> list[Choice]:
        """n choices per first turn, each `attempts` turns long, prompt i's choice j at index i*n + j.
        A later attempt whose prompt leaves less room than max_tokens in the context is cut to the room
        left (finish_reason "length" if it fills it), and one with no room is not run; either is said in
        the choice's `truncated`. `progress` hears each choice's last attempt as it is generated."""
        max_tokens = max_tokens or self.served.max_tokens
        greedy = temperature == 0
        # Greedy requests share engine calls whatever their seed; a seeded sampled request gets calls of its
        # own (its key), so what it draws does not depend on what else is in the batch.
        key = object() if seed is not None and not greedy else None
        prompts = [list(x1) for x1 in x1s for _ in range(n)]
        choices = [Choice([]) for _ in prompts]
        live = list(range(len(prompts)))
        for k in range(1, attempts + 1):
            if k > 1:
                for i in live:
                    prompts[i] = self.turns.second(prompts[i], choices[i].last.token_ids)
            by_budget: dict[int, list[int]] = defaultdict(list)
            for i in live:
                budget = min(max_tokens, self.served.context - len(prompts[i]))
                if budget < 1:
                    choices[i].truncated.append(f"attempt {k} was not run: its prompt ({len(prompts[i])} tokens) fills the "
                                                f"model's context ({self.served.context} tokens)")
                    if progress is not None:  # attempt k-1 turned out to be the last: it goes whole
                        progress.begin(i, Choice(choices[i].attempts[:-1], list(choices[i].truncated)))
                        progress.tokens(i, choices[i].last.token_ids)
                    continue
                if budget < max_tokens:
                    choices[i].truncated.append(f"attempt {k} was cut to {budget} tokens (max_tokens {max_tokens}) to fit "
                                                f"the model's context ({self.served.context} tokens)")
                by_budget[budget].append(i)
            live = [i for group in by_budget.values() for i in group]
            streamed = progress is not None and k == attempts
            if streamed:
                for i in live:
                    progress.begin(i, Choice(list(choices[i].attempts), list(choices[i].truncated)))
            calls = [
                generate([prompts[i] for i in group],
                         SamplingParams(budget, temperature, None if greedy else seed, 1.0 if greedy else top_p), key,
                         (lambda j, ids, group=group: progress.tokens(group[j], ids)) if streamed else None)
                for budget, group in by_budget.items()
            ]
            for group, gens in zip(by_budget.values(), await asyncio.gather(*calls)):
                for i, g in zip(group, gens):
                    choices[i].attempts.append(self._attempt(g, stop))
        return choices

    def _attempt(self, g: Generation, stop: list[str]) -> Attempt:
        """Ends an attempt at its first stop string as vLLM does: the text stops before the string, the
        tokens (what the next turn conditions on) after the token that completed it."""
        text = self.turns.text(g.token_ids)
        if first_stop(text, stop) is None:
            return Attempt(g.token_ids, text, g.finish_reason, len(g.token_ids))
        for end in range(1, len(g.token_ids) + 1):
            prefix = self.turns.text(g.token_ids[:end])
            if (cut := first_stop(prefix, stop)) is not None:
                return Attempt(g.token_ids[:end], prefix[:cut], "stop", len(g.token_ids))
        raise AssertionError("unreachable: the whole text holds a stop string")

    def generate_batch(self, items: list[EngineCall]) -> list[list[Generation]]:
        """One engine call per distinct (params, key) among the items, results handed back per item, and
        each streamed item's tokens to its own on_tokens (the engine numbers the call's prompts together)."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            groups[(item.params, item.key)].append(index)
        out: list[list[Generation]] = [[] for _ in items]
        for (params, _), indices in groups.items():
            owners = [(items[i], j) for i in indices for j in range(len(items[i].prompts))]

            def on_tokens(g: int, ids: list[int], owners=owners) -> None:
                item, j = owners[g]
                if item.on_tokens is not None:
                    item.on_tokens(j, ids)

            streamed = any(items[i].on_tokens is not None for i in indices)
            gens = iter(self.engine.generate([item.prompts[j] for item, j in owners], params,
                                             on_tokens if streamed else None))
            for i in indices:
                out[i] = [next(gens) for _ in items[i].prompts]
        return out
