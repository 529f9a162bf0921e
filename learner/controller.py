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
from learner.losses import Objective
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


class Controller:
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
        problems = self.task.eval_problems(self.cfg.task.eval_size)
        params = SamplingParams(self.cfg.eval.max_new_tokens or self.cfg.score.max_new_tokens, temperature=0.0)
        graded, _, _ = self._rollout_and_grade(problems, 1, params)
        metrics = ray.get(_metrics_of.remote(*graded))
        self.on_record({"kind": "eval", "step": step, "policy_version": self.version, **metrics})
        return metrics

    def train_step(self, objective: Objective, step: int) -> dict[str, float]:
        sc = self.cfg.score
        started = time.perf_counter()
        problems = self.task.train_problems(sc.prompts_per_step, self.rng)
        params = SamplingParams(sc.max_new_tokens, sc.temperature, seed=int(self.rng.integers(2**31)))
        graded, rollout_s, grading_s = self._rollout_and_grade(problems, sc.samples_per_prompt, params)

        ray.get([self.h.buffer.put.remote([ref], self.version, 0) for ref in graded])
        refs = ray.get(self.h.buffer.take.remote(self.version, len(graded)))
        if not refs:
            raise RuntimeError("the trace buffer returned no batch within the allowed policy lag")
        stats = self.h.learners.train_step(refs, objective)
        self.version += 1
        sync_s = self.h.weight_sync.broadcast(self.h.learners, self.h.rollout_actors, self.version)
        step_s = time.perf_counter() - started
        buffer_stats = ray.get(self.h.buffer.stats.remote())
        record = {
            "kind": "train", "stage": objective.stage, "step": step, "policy_version": self.version,
            **stats,
            "rollout_s": rollout_s, "grading_s": grading_s, "sync_s": sync_s, "step_s": step_s,
            "rollout_tokens_per_s": stats["rollout_tokens"] / max(rollout_s, 1e-9),
            "learner_tokens_per_s": stats["learner_tokens"] / max(stats["learner_s"], 1e-9),
            "buffer_depth": buffer_stats["depth"],
        }
        self.on_record(record)
        return record

    def train(self) -> None:
        sc = self.cfg.score
        schedule = [(1, sc.stage1_steps), (2, sc.stage2_steps)]
        total = sum(n for _, n in schedule)
        step = 0
        for stage, steps in schedule:
            objective = Objective(stage=stage, alpha=sc.alpha, beta1=sc.beta1, beta2=sc.beta2)
            for i in range(steps):
                step += 1
                r = self.train_step(objective, step)
                self.log(
                    f"stage {stage} step {i + 1}/{steps} ({step}/{total}) | reward@t1 {r['reward_t1']:.3f} "
                    f"@t2 {r['reward_t2']:.3f} | KL t1 {r['kl_t1']:.4f} t2 {r['kl_t2']:.4f} | "
                    f"{r['rollout_tokens_per_s']:.0f} rollout tok/s | {r['step_s']:.1f}s "
                    f"(rollout {r['rollout_s']:.1f} grade {r['grading_s']:.1f} learn {r['learner_s']:.1f} "
                    f"sync {r['sync_s']:.1f})"
                )
                if self.cfg.eval.every_steps and step % self.cfg.eval.every_steps == 0 and step < total:
                    m = self.evaluate(step)
                    self.log(f"eval @ step {step}: Acc@t1 {m['acc_t1']:.1f} Acc@t2 {m['acc_t2']:.1f} Δ {m['delta']:+.1f}")
