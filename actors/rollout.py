"""Two-attempt rollouts: k first attempts per problem, then one second attempt for each.

`RolloutWorker` is the logic (testable in-process with any engine); `RolloutActor` is its thin Ray
wrapper, which builds the engine where the actor runs and takes part in weight transport.
"""
from __future__ import annotations

import time

import ray

from actors.engines.base import GenerationEngine, SamplingParams
from actors.turns import Turns
from actors.weight_sync import WeightReceiver
from common import telemetry
from common.logs import configure_process
from graders.base import Task
from protos import BatchInfo, Problem, TraceBatch, TraceMeta


class RolloutWorker:
    """One engine, one policy version per batch."""

    def __init__(self, engine: GenerationEngine, task: Task):
        self.engine = engine
        self.turns = Turns(engine.tokenizer, task)
        self.pad_id = engine.tokenizer.pad_token_id

    def rollout(self, problems: list[Problem], k: int, params: SamplingParams) -> tuple[BatchInfo, TraceBatch]:
        """k traces per problem: what the driver reads, and the arrays the learner trains on."""
        version = self.engine.version  # weights change only between calls, so the batch has one version
        started = time.perf_counter()
        prompts = [self.turns.first(p) for p in problems for _ in range(k)]
        first = self.engine.generate(prompts, params)
        second_prompts = [self.turns.second(x, g.token_ids) for x, g in zip(prompts, first)]
        second = self.engine.generate(second_prompts, params)
        if self.engine.version != version:
            raise RuntimeError(f"policy changed from v{version} to v{self.engine.version} during a rollout")
        groups = [i // k for i in range(len(prompts))]
        meta = [
            TraceMeta(
                problem_id=problems[group].id,
                group=group,
                attempt1=self.turns.text(g1.token_ids),
                attempt2=self.turns.text(g2.token_ids),
                finish1=g1.finish_reason,
                finish2=g2.finish_reason,
            )
            for group, g1, g2 in zip(groups, first, second)
        ]
        batch = TraceBatch.from_parts(
            version,
            groups,
            prompts,
            [g.token_ids for g in first],
            self.turns.instruction_ids,
            [g.token_ids for g in second],
            [g.logprobs for g in first],
            [g.logprobs for g in second],
            self.pad_id,
        )
        info = BatchInfo(version, meta, time.perf_counter() - started, sum(len(g.token_ids) for g in first + second))
        telemetry.record_rollout(info.rollout_tokens, info.rollout_s)
        return info, batch

    def load_weights(self, version: int, state_dict: dict) -> None:
        self.engine.update_weights(version, state_dict)


@ray.remote
class RolloutActor(RolloutWorker, WeightReceiver):
    """Thin Ray wrapper: builds its engine in the actor's process. Call `rollout` with
    `.options(num_returns=2)`, so the driver can fetch the BatchInfo alone."""

    def __init__(self, engine_kind: str, model_dir: str, task_name: str, task_params: dict, threads: int):
        from actors.engines import make_engine
        from graders.registry import make_task

        configure_process(threads)
        super().__init__(make_engine(engine_kind, model_dir), make_task(task_name, task_params))
