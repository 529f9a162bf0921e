"""The loop's steps on Ray: rollout actors, the grader pool, the FSDP learner group, weight sync.

The driver holds handles and ObjectRefs only. A batch's arrays go rollout actor -> learner ranks
inside Ray's object store; what reaches the driver is small (texts and grades, stats, metrics).
Grading is chained on the rollout's ObjectRef, so it starts the moment a rollout finishes.

Everything the driver runs is imported with this module, before it connects to Ray: with
`ray job submit`, a second node on the same machine re-extracts the job's working directory in
place when the job starts, and an import during that moment fails (seen with two nodes on one
machine, tests/test_multinode.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from actors.rollout import RolloutActor
from actors.weight_sync import make_weight_sync
from graders.pool import GraderPool
from learner.driver.loop import Request
from learner.driver.placement import ray_options
from learner.training.group import LearnerGroup
from learner.training.losses import Objective
from protos import BatchInfo, RunConfig


@dataclass
class Shard:
    """One rollout actor's part of a request, in flight."""

    info_ref: Any  # ObjectRef of the BatchInfo
    batch_ref: Any  # ObjectRef of the TraceBatch (never fetched by the driver)
    grades: Any  # graders.pool.PendingGrades


class RayBackend:
    def __init__(self, cfg: RunConfig, base_dir: str):
        c = cfg.cluster
        # each role computes with the cores it reserved: with rollouts running ahead, the rollout
        # actors and the learner compute at the same time, and must not contend for the same cores
        threads = lambda cpus: c.torch_threads or max(1, int(cpus))  # noqa: E731
        self.rollout_actors = [
            RolloutActor.options(**ray_options(c, "rollout")).remote(
                c.engine, base_dir, cfg.task.name, cfg.task.params, threads(c.rollout_cpus), c.weight_sync_timeout_s
            )
            for _ in range(c.rollout_actors)
        ]
        self.graders = GraderPool(
            cfg.task.name, cfg.task.params, num_actors=c.grader_actors,
            batch_timeout_s=c.grade_timeout_s, num_cpus_per_actor=c.grader_cpus, resources=c.grader_resources,
            retries=c.grade_retries,
        )
        self.learners = LearnerGroup(
            base_dir, c.learner_workers, cpus=c.learner_cpus, gpus=c.learner_gpus, threads=threads(c.learner_cpus),
            resources=c.learner_resources,
            lr=cfg.score.lr, grad_clip=cfg.score.grad_clip, temperature=cfg.score.temperature, seed=cfg.seed,
            micro_batch_tokens=c.learner_micro_batch_tokens,
        )
        self.weight_sync = make_weight_sync(c, self.learners, self.rollout_actors)

    def shards_per_request(self, num_problems: int) -> int:
        return min(num_problems, len(self.rollout_actors))

    def submit(self, request: Request) -> list[Shard]:
        """Split the problems over the rollout actors (queued behind what each is sampling); grading
        of each part is requested at once and starts when its rollout exists."""
        parts = np.array_split(np.arange(len(request.problems)), self.shards_per_request(len(request.problems)))
        shards = []
        for actor, idx in zip(self.rollout_actors, parts):
            problems = [request.problems[i] for i in idx]
            info_ref, batch_ref = actor.rollout.options(num_returns=2).remote(
                problems, request.k, request.params, request.min_version
            )
            shards.append(Shard(info_ref, batch_ref, self.graders.grade_traces(problems, info_ref, len(problems) * request.k)))
        return shards

    def ready(self, shard: Shard) -> bool:
        refs = [shard.info_ref, *shard.grades.refs]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return len(done) == len(refs)

    def wait_rollouts(self, shards: list[Shard]) -> None:
        ray.wait([s.info_ref for s in shards], num_returns=len(shards), fetch_local=False)

    def collect(self, shard: Shard) -> tuple[BatchInfo, Any]:
        info = ray.get(shard.info_ref)  # a failed rollout raises here
        info.set_grades(self.graders.collect(shard.grades))
        return info, shard.batch_ref

    def train(self, objective: Objective, rewards: np.ndarray, batches: list) -> dict[str, float]:
        return self.learners.train_step(objective, rewards, batches)

    def sync(self, version: int) -> float:
        return self.weight_sync.broadcast(self.learners, self.rollout_actors, version)

    def save(self, out_dir: str) -> None:
        self.learners.save(out_dir)

    def save_state(self, out_dir: str) -> None:
        """The learner's resumable state (policy and optimizer, sharded)."""
        self.learners.save_state(out_dir)

    def load_state(self, in_dir: str) -> None:
        self.learners.load_state(in_dir)

    def close(self) -> None:
        self.learners.close()

    def shutdown(self) -> None:
        """Kill every actor of this backend, dead or alive (after one died: the run rebuilds them all)."""
        for actor in self.rollout_actors + self.learners.actors:
            ray.kill(actor, no_restart=True)
        self.graders.shutdown()
