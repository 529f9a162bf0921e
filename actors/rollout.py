"""Two-attempt rollouts: k first attempts per problem, then one second attempt for each."""
from __future__ import annotations

import time

from actors.engines.base import GenerationEngine, SamplingParams
from actors.turns import Turns
from protos import Problem, TraceBatch, TraceMeta


class RolloutWorker:
    """Plain logic of a rollout actor: one engine, one policy version per batch."""

    def __init__(self, engine: GenerationEngine, turns: Turns, pad_id: int):
        self.engine, self.turns, self.pad_id = engine, turns, pad_id

    def rollout(self, problems: list[Problem], k: int, params: SamplingParams) -> TraceBatch:
        version = self.engine.version  # weights change only between calls, so the batch has one version
        started = time.perf_counter()
        prompts = [self.turns.first(p) for p in problems for _ in range(k)]
        first = self.engine.generate(prompts, params)
        second_prompts = [self.turns.second(x, g.token_ids) for x, g in zip(prompts, first)]
        second = self.engine.generate(second_prompts, params)
        if self.engine.version != version:
            raise RuntimeError(f"policy changed from v{version} to v{self.engine.version} during a rollout")
        meta = [
            TraceMeta(
                problem_id=problems[i // k].id,
                group=i // k,
                attempt1=self.turns.text(g1.token_ids),
                attempt2=self.turns.text(g2.token_ids),
                finish1=g1.finish_reason,
                finish2=g2.finish_reason,
            )
            for i, (g1, g2) in enumerate(zip(first, second))
        ]
        batch = TraceBatch.from_parts(
            version,
            meta,
            prompts,
            [g.token_ids for g in first],
            self.turns.instruction_ids,
            [g.token_ids for g in second],
            [g.logprobs for g in first],
            [g.logprobs for g in second],
            self.pad_id,
        )
        elapsed = time.perf_counter() - started
        batch.timings["rollout_s"] = elapsed
        batch.timings["rollout_tokens"] = float(sum(len(g.token_ids) for g in first + second))
        return batch
