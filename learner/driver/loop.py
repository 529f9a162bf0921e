"""The training loop: the schedule (which objective for how many steps, when to evaluate) and the
step (draw problems, roll out, grade, check versions, train, sync, record), in one place.

How a step's parts are carried out is a backend's business (learner/driver/ray_backend.py: Ray
actors and ObjectRefs; learner/driver/local_backend.py: the same plain classes in one process);
the loop never asks which one it drives, so both run exactly the same steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from actors.engines.base import SamplingParams
from graders.base import Task
from learner.driver.buffer import TraceBuffer
from learner.driver.metrics import trace_metrics
from learner.training.losses import Objective, stage_schedule
from protos import BatchInfo, Problem, RunConfig, rewards


def held_out_label(task) -> str:
    """What an evaluation of this TaskConfig reads, for tables and logs: a validation slice says so."""
    if task.eval_offset:
        return f"held-out problems {task.eval_offset}-{task.eval_offset + task.eval_size - 1} (a validation slice)"
    return f"{task.eval_size} held-out problems"


@dataclass
class Request:
    """Rollouts to sample: k two-attempt traces for each problem."""

    problems: list[Problem]
    k: int
    params: SamplingParams


class Backend(Protocol):
    """What the loop needs done. A submitted request's shards are handles the backend understands
    (ObjectRefs, or finished work in-process); `collect` returns each shard graded."""

    def submit(self, request: Request) -> list[Any]: ...

    def wait_rollouts(self, shards: list[Any]) -> None: ...

    def collect(self, shard: Any) -> tuple[BatchInfo, Any]: ...

    def train(self, objective: Objective, rewards: np.ndarray, batches: list[Any]) -> dict[str, float]: ...

    def sync(self, version: int) -> float: ...


class TrainLoop:
    def __init__(self, cfg: RunConfig, task: Task, backend: Backend, on_record: Callable[[dict], None],
                 log: Callable[[str], None]):
        self.cfg, self.task, self.backend = cfg, task, backend
        self.on_record, self.log = on_record, log
        self.version = 0  # updates the learner has made = the policy version the engines should hold
        self.rng = np.random.default_rng(cfg.seed)
        self.buffer = TraceBuffer(cfg.cluster.buffer_capacity, cfg.cluster.max_policy_lag)

    # --- requests ---------------------------------------------------------------------------

    def train_request(self) -> Request:
        """A step's fresh training problems and its sampling (seeded from the run's generator)."""
        sc = self.cfg.score
        problems = self.task.train_problems(sc.prompts_per_step, self.rng)
        return Request(problems, sc.samples_per_prompt, SamplingParams(sc.max_new_tokens, sc.temperature, seed=int(self.rng.integers(2**31))))

    def eval_request(self) -> Request:
        """The held-out problems (task.eval_size of them from task.eval_offset), decoded greedily once
        each: the paper's evaluation protocol."""
        params = SamplingParams(self.cfg.eval.max_new_tokens or self.cfg.score.max_new_tokens, temperature=0.0)
        start = self.cfg.task.eval_offset
        return Request(self.task.eval_problems(start + self.cfg.task.eval_size)[start:], 1, params)

    def _sample(self, request: Request) -> tuple[list[BatchInfo], list[Any], float, float]:
        """Roll out and grade a request through the buffer: (infos, batch handles, rollout s, grading s)."""
        started = time.perf_counter()
        shards = self.backend.submit(request)
        self.buffer.reserve(len(shards))
        self.backend.wait_rollouts(shards)
        generated = time.perf_counter()
        for shard in shards:
            self.buffer.put(*self.backend.collect(shard))
        graded = time.perf_counter()
        taken = self.buffer.take(self.version, len(shards))
        if len(taken) != len(shards):
            raise RuntimeError(
                f"{len(shards) - len(taken)} of {len(shards)} rollout batches were sampled by a policy more than "
                f"cluster.max_policy_lag={self.cfg.cluster.max_policy_lag} versions old"
            )
        infos = [info for info, _ in taken]
        for info in infos:  # engines report the version they held; the loop knows which it synced
            if info.policy_version != self.version:
                raise RuntimeError(
                    f"the rollout engines sampled with policy v{info.policy_version}, expected v{self.version}: "
                    f"the last weight sync ({self.cfg.cluster.weight_sync}) did not reach them"
                )
        return infos, [handle for _, handle in taken], generated - started, graded - generated

    # --- steps ------------------------------------------------------------------------------

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy, one trace per held-out problem: the paper's evaluation protocol."""
        infos, _, _, _ = self._sample(self.eval_request())
        metrics = trace_metrics([m for info in infos for m in info.meta])
        self.on_record({"kind": "eval", "step": step, "policy_version": self.version, **metrics})
        return metrics

    def train_step(self, objective: Objective, step: int) -> dict:
        started = time.perf_counter()
        infos, batches, rollout_s, grading_s = self._sample(self.train_request())
        meta = [m for info in infos for m in info.meta]
        r = rewards(meta)
        stats = self.backend.train(objective, r, batches)
        sampled_version = self.version
        self.version += 1
        sync_s = self.backend.sync(self.version)
        rollout_tokens = float(sum(info.rollout_tokens for info in infos))
        record = {
            "kind": "train", "stage": objective.stage, "method": objective.method, "step": step,
            "policy_version": self.version, "sampled_policy_version": sampled_version,
            **{f"train_{k}": v for k, v in trace_metrics(meta).items()},  # the five metrics on this step's samples
            "reward_t1": float(r[:, 0].mean()), "reward_t2": float(r[:, 1].mean()),
            **stats, "rollout_tokens": rollout_tokens,
            "rollout_s": rollout_s, "grading_s": grading_s, "sync_s": sync_s,
            "step_s": time.perf_counter() - started,
            "rollout_tokens_per_s": rollout_tokens / max(rollout_s, 1e-9),
            "learner_tokens_per_s": stats["learner_tokens"] / max(stats["learner_s"], 1e-9),
            "buffer_depth": len(self.buffer),
        }
        self.on_record(record)
        return record

    # --- the schedule -----------------------------------------------------------------------

    def train(self) -> None:
        schedule = stage_schedule(self.cfg.score)
        total = sum(n for _, n in schedule)
        step = 0
        for objective, steps in schedule:
            label = f"stage {objective.stage}" if objective.method == "score" else objective.method
            for i in range(steps):
                step += 1
                r = self.train_step(objective, step)
                self.log(
                    f"{label} step {i + 1}/{steps} ({step}/{total}) | reward@t1 {r['reward_t1']:.3f} "
                    f"@t2 {r['reward_t2']:.3f} | KL t1 {r['kl_t1']:.4f} t2 {r['kl_t2']:.4f} | "
                    f"{r['rollout_tokens_per_s']:.0f} rollout tok/s | {r['step_s']:.1f}s "
                    f"(rollout {r['rollout_s']:.1f} grade {r['grading_s']:.1f} learn {r['learner_s']:.1f} "
                    f"sync {r['sync_s']:.1f})"
                )
                if self.cfg.eval.every_steps and step % self.cfg.eval.every_steps == 0 and step < total:
                    m = self.evaluate(step)
                    self.log(f"eval @ step {step}: Acc@t1 {m['acc_t1']:.1f} Acc@t2 {m['acc_t2']:.1f} Δ {m['delta']:+.1f}")
