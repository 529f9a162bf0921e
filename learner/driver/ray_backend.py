"""The loop's steps on Ray: rollout actors, the grader pool, the FSDP learner group, weight sync.

The driver holds handles and ObjectRefs only. A batch's arrays go rollout actor -> learner ranks
inside Ray's object store; what reaches the driver is small (texts and grades, stats, metrics).
Grading is chained on the rollout's ObjectRef, so it starts the moment a rollout finishes.

A rollout actor that dies (or hangs: stops answering) costs no step: the backend replaces it with a new
actor, sends that the current weights, and sends it again every request the dead one had not
answered. A new actor rather than Ray's restart of the old one: Ray would restart it with the base
weights and fail the calls it held anyway, and the collective group must be formed anew either way.

Everything the driver runs is imported with this module, before it connects to Ray: with
`ray job submit`, a second node on the same machine re-extracts the job's working directory in
place when the job starts, and an import during that moment fails (seen with two nodes on one
machine, tests/test_multinode.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from actors.rollout import RolloutActor
from actors.weight_sync import make_weight_sync
from graders.pool import GraderPool
from learner.driver.actor_processes import end_processes
from learner.driver.loop import Request, reference_kwargs
from learner.driver.placement import ray_options
from learner.driver.recovery import Recoveries
from learner.training.group import LearnerGroup
from learner.training.losses import Objective
from protos import BatchInfo, Problem, RunConfig

ROLLOUT_ACTOR_TITLE = "ray::RolloutActor"  # how Ray titles a RolloutActor's worker process


@dataclass(eq=False)
class Shard:
    """One rollout actor's part of a request, in flight: what was asked of which actor slot, and
    the refs of the answer (replaced when the request is sent again to a replacement actor)."""

    index: int  # the rollout actor's slot
    problems: list[Problem]
    request: Request
    info_ref: Any = None  # ObjectRef of the BatchInfo
    batch_ref: Any = None  # ObjectRef of the TraceBatch (never fetched by the driver)
    grades: Any = None  # graders.pool.PendingGrades


class RayBackend:
    def __init__(self, cfg: RunConfig, base_dir: str, recoveries: Recoveries):
        c = cfg.cluster
        # each role computes with the cores it reserved: with rollouts running ahead, the rollout
        # actors and the learner compute at the same time, and must not contend for the same cores
        threads = lambda cpus: c.torch_threads or max(1, int(cpus))  # noqa: E731
        self._new_rollout_actor = lambda: RolloutActor.options(**ray_options(c, "rollout")).remote(  # noqa: E731
            c.engine, base_dir, cfg.task.name, cfg.task.params, threads(c.rollout_cpus), c.weight_sync_timeout_s,
            reference_kwargs(cfg),
        )
        self.rollout_actors = [self._new_rollout_actor() for _ in range(c.rollout_actors)]
        self.recoveries, self.alive_timeout_s = recoveries, c.rollout_alive_timeout_s
        self.version = 0  # the newest weights sent to the rollout actors
        self._unanswered: list[Shard] = []  # sent and not yet collected: what a dead actor's replacement is sent again
        self.graders = GraderPool(
            cfg.task.name, cfg.task.params, num_actors=c.grader_actors,
            batch_timeout_s=c.grade_timeout_s, num_cpus_per_actor=c.grader_cpus, resources=c.grader_resources,
            retries=c.grade_retries,
        )
        self.learners = LearnerGroup(
            base_dir, c.learner_workers, cpus=c.learner_cpus, gpus=c.learner_gpus, threads=threads(c.learner_cpus),
            resources=c.learner_resources,
            lr=cfg.score.lr, grad_clip=cfg.score.grad_clip, temperature=cfg.score.temperature, seed=cfg.seed,
            micro_batch_tokens=c.learner_micro_batch_tokens, reference=reference_kwargs(cfg) is None, dtype=c.learner_dtype,
        )
        self._processes = self._await_built(self.rollout_actors)  # each slot's (node id, pid)
        self.weight_sync = make_weight_sync(c, self.learners, self.rollout_actors)

    def shards_per_request(self, num_problems: int) -> int:
        return min(num_problems, len(self.rollout_actors))

    def submit(self, request: Request) -> list[Shard]:
        """Split the problems over the rollout actors (queued behind what each is sampling); grading
        of each part is requested at once and starts when its rollout exists."""
        parts = np.array_split(np.arange(len(request.problems)), self.shards_per_request(len(request.problems)))
        shards = [self._send(Shard(i, [request.problems[j] for j in idx], request)) for i, idx in enumerate(parts)]
        self._unanswered += shards
        return shards

    def _send(self, shard: Shard) -> Shard:
        """Send `shard` to the actor now in its slot, and its grading after it."""
        r = shard.request
        actor = self.rollout_actors[shard.index]
        shard.info_ref, shard.batch_ref = actor.rollout.options(num_returns=2).remote(
            shard.problems, r.k, r.params, r.min_version, r.for_training
        )
        shard.grades = self.graders.grade_traces(shard.problems, shard.info_ref, len(shard.problems) * r.k)
        return shard

    def ready(self, shard: Shard) -> bool:
        refs = [shard.info_ref, *shard.grades.refs]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return len(done) == len(refs)

    def wait_rollouts(self, shards: list[Shard]) -> None:
        """Until these rollouts exist. Every `rollout_alive_timeout_s` without them, their actors are
        asked whether they are alive; one that does not answer is replaced as hung."""
        while shards:
            _, waiting = ray.wait([s.info_ref for s in shards], num_returns=len(shards),
                                  timeout=self.alive_timeout_s, fetch_local=False)
            shards = [s for s in shards if s.info_ref in waiting]
            if shards:
                self._replace_unresponsive(sorted({s.index for s in shards}), self.version)

    def collect(self, shard: Shard) -> tuple[BatchInfo, Any]:
        while True:
            try:
                info = ray.get(shard.info_ref, timeout=self.alive_timeout_s)  # a failed rollout raises here
                break
            except ray.exceptions.GetTimeoutError:  # still sampling, or hung: replaced (and `shard` sent again) if hung
                self._replace_unresponsive([shard.index], self.version)
            except ray.exceptions.RayActorError as exc:  # its actor died: replaced, and `shard` sent again
                self._replace_rollout_actors([shard.index], exc, self.version)
        self._unanswered.remove(shard)
        info.set_grades(self.graders.collect(shard.grades))
        return info, shard.batch_ref

    def train(self, objective: Objective, rewards: np.ndarray, batches: list) -> dict[str, float]:
        return self.learners.train_step(objective, rewards, batches)

    def sync(self, version: int) -> float:
        started = time.perf_counter()
        try:
            self.weight_sync.broadcast(self.learners, self.rollout_actors, version)
        except ray.exceptions.RayError:  # a rollout actor died or hangs (else: re-raised)
            if not self._replace_unresponsive(range(len(self.rollout_actors)), version):
                raise
            self.weight_sync.broadcast(self.learners, self.rollout_actors, version)  # the survivors too
        self.version = version
        return time.perf_counter() - started

    def _replace_unresponsive(self, slots, version: int) -> list[int]:
        """Of these slots, replace those whose actor is dead or does not answer `alive` (on a thread
        of its own, so a busy actor answers at once) within `rollout_alive_timeout_s`."""
        refs = {i: self.rollout_actors[i].alive.remote() for i in slots}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.alive_timeout_s)
        dead = [i for i, ref in refs.items() if ref not in ready or not _answered(ref)]
        if dead:
            self._replace_rollout_actors(dead, TimeoutError(
                f"rollout actor {', '.join(map(str, dead))} is dead or hung: no answer to a liveness call within "
                f"{self.alive_timeout_s:g}s (cluster.rollout_alive_timeout_s)"), version)
        return dead

    def _replace_rollout_actors(self, slots: list[int], error: Exception, version: int) -> None:
        """New actors in these slots, holding `version`'s weights, sent again every request the old
        ones had not answered; counted as one recovery."""
        began = self.recoveries.begin(error, f"replacing rollout actor {', '.join(map(str, slots))} with the "
                                             f"current weights (v{version}); no step is lost")
        for i in slots:
            ray.kill(self.rollout_actors[i], no_restart=True)
        # a hung actor's process may outlive ray.kill, holding its memory: ended before the new one starts
        end_processes([self._processes[i] for i in slots], ROLLOUT_ACTOR_TITLE)
        for i in slots:
            self.rollout_actors[i] = self._new_rollout_actor()
        for i, process in zip(slots, self._await_built([self.rollout_actors[i] for i in slots])):
            self._processes[i] = process
        self.weight_sync.bring_up(self.learners, self.rollout_actors, [self.rollout_actors[i] for i in slots], version)
        resent = [self._send(shard) for shard in self._unanswered if shard.index in slots]
        self.recoveries.done(began, error, "rollout_actor", slots=slots, policy_version=version,
                             requests_resent=len(resent), steps_lost=0)

    @staticmethod
    def _await_built(actors: list) -> list[tuple[str, int]]:
        """Until these actors' engines are built (however long that takes: no deadline), so that
        neither a weight group's deadline nor a liveness call ever measures an engine's start-up.
        Returns each one's (node id, pid)."""
        return ray.get([actor.process.remote() for actor in actors])

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


def _answered(ref) -> bool:
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError:
        return False
