"""The single controller's loop: rollout -> grade -> buffer -> learn -> broadcast, Stage I then Stage II.

It holds handles and ObjectRefs only. Batches flow rollout actor -> grading task -> trace buffer ->
learner ranks inside Ray's object store; what reaches the controller is small (stats, metrics).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import ray

from actors.engines.base import SamplingParams
from graders.base import Task
from graders.trace_grading import grade_with_pool
from learner import telemetry
from learner.losses import Objective
from learner.loop import TrainLoop
from learner.metrics import batch_metrics
from protos import Problem, RunConfig, TraceBatch

_grade_task = ray.remote(num_cpus=0)(grade_with_pool)


@ray.remote(num_cpus=0)
def _metrics_of(*batches: TraceBatch) -> dict[str, float]:
    return batch_metrics(TraceBatch.concat(batches))


@dataclass
class Handles:
    rollout_actors: list
    grader_pool: object
    learners: object  # learner.group.LearnerGroup
    buffer: object  # a TraceBuffer actor
    weight_sync: object  # learner.weight_sync.WeightSync


class Controller(TrainLoop):
    """The distributed loop's steps (TrainLoop holds the schedule): Ray actors, ObjectRefs."""

    def __init__(self, cfg: RunConfig, task: Task, handles: Handles, on_record: Callable[[dict], None], log: Callable[[str], None]):
        self.cfg, self.task, self.h = cfg, task, handles
        self.on_record, self.log = on_record, log
        self.version = 0
        self.rng = np.random.default_rng(cfg.seed)

    def _rollout_and_grade(self, problems: list[Problem], k: int, params: SamplingParams) -> tuple[list, float, float]:
        """Graded-batch refs, one per rollout actor, and the seconds spent generating and grading."""
        started = time.perf_counter()
        shards = [s for s in np.array_split(np.arange(len(problems)), len(self.h.rollout_actors)) if len(s)]
        rollouts, graded = [], []
        for actor, idx in zip(self.h.rollout_actors, shards):
            shard = [problems[i] for i in idx]
            ref = actor.rollout.remote(shard, k, params)
            rollouts.append(ref)
            graded.append(_grade_task.remote(self.h.grader_pool, shard, ref))
        ray.wait(rollouts, num_returns=len(rollouts), fetch_local=False)
        generated = time.perf_counter()
        ray.wait(graded, num_returns=len(graded), fetch_local=False)
        return graded, generated - started, time.perf_counter() - generated

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy, one trace per held-out problem: the paper's evaluation protocol."""
        problems, params = self.eval_request()
        graded, _, _ = self._rollout_and_grade(problems, 1, params)
        metrics = ray.get(_metrics_of.remote(*graded))
        self.on_record(self.eval_record(step, metrics))
        telemetry.record_eval(metrics)
        return metrics

    def train_step(self, objective: Objective, step: int) -> dict[str, float]:
        sc = self.cfg.score
        started = time.perf_counter()
        problems, params = self.train_request()
        graded, rollout_s, grading_s = self._rollout_and_grade(problems, sc.samples_per_prompt, params)

        ray.get([self.h.buffer.put.remote([ref], self.version, 0) for ref in graded])
        refs = ray.get(self.h.buffer.take.remote(self.version, len(graded)))
        if not refs:
            raise RuntimeError("the trace buffer returned no batch within the allowed policy lag")
        stats = self.h.learners.train_step(refs, objective)
        if stats["sampled_policy_version"] != self.version:
            raise RuntimeError(
                f"the rollout engines sampled with policy v{stats['sampled_policy_version']}, expected "
                f"v{self.version}: the last weight sync ({self.cfg.cluster.weight_sync}) did not reach them"
            )
        self.version += 1
        sync_s = self.h.weight_sync.broadcast(self.h.learners, self.h.rollout_actors, self.version)
        step_s = time.perf_counter() - started
        buffer_stats = ray.get(self.h.buffer.stats.remote())
        record = {
            **self.train_record(objective, step, stats, rollout_s=rollout_s, grading_s=grading_s, sync_s=sync_s, step_s=step_s),
            "buffer_depth": buffer_stats["depth"],
        }
        self.on_record(record)
        telemetry.record_train_step(record)
        return record
