"""The training loop in one process, without Ray: the same plain classes the Ray actors wrap.

`RolloutWorker` (transformers engine), the task's grader, `LearnerWorker` (one FSDP2 rank on gloo)
and the shared `TrainLoop` schedule, composed directly. It exists so that many small runs (the
experiment suite's methods x seeds, hyperparameter sweeps) can run side by side, one per core,
without a Ray session each, and on machines without Ray. `learner.main` remains the system entry
point; a step here is the same computation as a step of the distributed Controller.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from actors.engines.hf_engine import TransformersEngine
from actors.rollout import RolloutWorker
from actors.turns import Turns
from graders.base import Task
from graders.trace_grading import grade_traces
from learner.losses import Objective
from learner.loop import TrainLoop
from learner.metrics import batch_metrics
from learner.ports import free_port
from learner.worker import LearnerWorker
from protos import Problem, RunConfig, TraceBatch


class LocalController(TrainLoop):
    def __init__(self, cfg: RunConfig, task: Task, base_dir: str | Path, on_record: Callable[[dict], None], log: Callable[[str], None]):
        self.cfg, self.task = cfg, task
        self.on_record, self.log = on_record, log
        self.version = 0
        self.rng = np.random.default_rng(cfg.seed)
        engine = TransformersEngine.from_pretrained(str(base_dir))
        self.rollout = RolloutWorker(engine, Turns(engine.tokenizer, task), engine.pad_id)
        self.learner = LearnerWorker(
            str(base_dir), rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{free_port()}",
            lr=cfg.score.lr, grad_clip=cfg.score.grad_clip, temperature=cfg.score.temperature, seed=cfg.seed,
        )

    def _grade(self, problems: list[Problem], batch: TraceBatch) -> TraceBatch:
        return grade_traces(lambda ps, cs: [self.task.grade(p, c) for p, c in zip(ps, cs)], problems, batch)

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy, one trace per held-out problem: the paper's evaluation protocol."""
        problems, params = self.eval_request()
        batch = self._grade(problems, self.rollout.rollout(problems, 1, params))
        metrics = batch_metrics(batch)
        self.on_record(self.eval_record(step, metrics))
        return metrics

    def train_step(self, objective: Objective, step: int) -> dict[str, float]:
        sc = self.cfg.score
        started = time.perf_counter()
        problems, params = self.train_request()
        batch = self.rollout.rollout(problems, sc.samples_per_prompt, params)
        rollout_s = time.perf_counter() - started
        batch = self._grade(problems, batch)
        grading_s = time.perf_counter() - started - rollout_s
        stats = self.learner.train_step(batch, objective)
        self.version += 1
        synced = time.perf_counter()
        self.rollout.engine.update_weights(self.version, self.learner.full_state_dict())
        sync_s = time.perf_counter() - synced
        step_s = time.perf_counter() - started
        record = self.train_record(objective, step, stats, rollout_s=rollout_s, grading_s=grading_s, sync_s=sync_s, step_s=step_s)
        self.on_record(record)
        return record

    def close(self) -> None:
        self.learner.close()
