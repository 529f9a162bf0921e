"""The loop's steps in one process, without Ray: the same plain classes the Ray actors wrap.

`RolloutWorker` (transformers engine), `GraderWorker`, and `LearnerWorker` (one FSDP2 rank on
gloo), called directly. It exists so that many small runs (the experiment suite's methods x seeds,
hyperparameter sweeps) can run side by side, one per core, without a Ray session each.
`learner.main` remains the system entry point; a step here is the same computation as a step on Ray.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from actors.engines.hf_engine import TransformersEngine
from actors.reference import ReferencePolicy
from actors.rollout import RolloutWorker
from common.ports import free_port
from graders.pool import GraderWorker
from graders.registry import make_task
from learner.driver.loop import Request, reference_kwargs
from learner.training.losses import Objective
from learner.training.worker import LearnerWorker
from protos import BatchInfo, RunConfig, TraceBatch


class LocalBackend:
    def __init__(self, cfg: RunConfig, base_dir: str | Path):
        reference = reference_kwargs(cfg)
        self.rollout = RolloutWorker(
            TransformersEngine.from_pretrained(str(base_dir)), make_task(cfg.task.name, cfg.task.params),
            weights_timeout_s=0,  # in one process nothing else can deliver weights: a rollout needing newer ones fails at once
            reference=ReferencePolicy(str(base_dir), **reference) if reference is not None else None,
        )
        self.grader = GraderWorker(cfg.task.name, cfg.task.params)
        self.learner = LearnerWorker(
            str(base_dir), rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{free_port()}",
            lr=cfg.score.lr, grad_clip=cfg.score.grad_clip, temperature=cfg.score.temperature, seed=cfg.seed,
            micro_batch_tokens=cfg.cluster.learner_micro_batch_tokens, reference=reference is None,
            dtype=cfg.cluster.learner_dtype,
        )

    def shards_per_request(self, num_problems: int) -> int:
        return 1

    def submit(self, request: Request) -> list:
        """Samples now, with the weights the loop last synced (so a request made L steps ahead is
        sampled by the policy of then, as on Ray); grading waits for collect."""
        info, batch = self.rollout.rollout(request.problems, request.k, request.params, request.min_version,
                                           request.for_training)
        return [(request, info, batch)]

    def ready(self, shard) -> bool:
        return True

    def wait_rollouts(self, shards: list) -> None:
        pass  # sampled in submit

    def collect(self, shard) -> tuple[BatchInfo, TraceBatch]:
        request, info, batch = shard
        info.set_grades(self.grader.grade_traces(request.problems, info))
        return info, batch

    def train(self, objective: Objective, rewards: np.ndarray, batches: list[TraceBatch]) -> dict[str, float]:
        return self.learner.train_step(objective, rewards, *batches)

    def sync(self, version: int) -> float:
        started = time.perf_counter()
        self.rollout.load_weights(version, self.learner.full_state_dict())
        return time.perf_counter() - started

    def save(self, out_dir: str) -> None:
        self.learner.save(out_dir)

    def save_state(self, out_dir: str) -> None:
        """The learner's resumable state (policy and optimizer, sharded)."""
        self.learner.save_state(out_dir)

    def load_state(self, in_dir: str) -> None:
        self.learner.load_state(in_dir)

    def close(self) -> None:
        self.learner.close()
