"""Moving the learner's weights into the rollout engines, behind one interface.

`ObjectStoreSync` (any cluster, the CPU default): rank 0 puts the full state dict in Ray's
object store once; every rollout actor is handed the same ref and loads it in place.

`CollectiveSync` (GPU clusters, as OpenRLHF and verl do it): learner rank 0 and the rollout
engines form a torch.distributed group of their own (actors/engines/nccl_sync.py) and the weights
are broadcast over it, GPU to GPU with NCCL, never through host memory or the object store. On
CPU nodes the same group runs on gloo, which is how CI exercises it. Every collective has a
deadline, so a dead rollout engine or learner is an error, not a hang.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

import ray

from learner.group import LearnerGroup
from protos.config import ClusterConfig


class WeightSync(ABC):
    @abstractmethod
    def broadcast(self, learners: LearnerGroup, rollout_actors: list, version: int) -> float:
        """Push the learner's current weights as `version` to every rollout actor; returns seconds."""


class ObjectStoreSync(WeightSync):
    def broadcast(self, learners: LearnerGroup, rollout_actors: list, version: int) -> float:
        started = time.perf_counter()
        state_ref = learners.state_dict_ref()
        ray.get([a.update_weights.remote(version, state_ref) for a in rollout_actors])
        return time.perf_counter() - started


class CollectiveSync(WeightSync):
    def __init__(self, learners: LearnerGroup, rollout_actors: list, backend: str, timeout_s: float):
        """Forms the group: learner rank 0 (rank 0 of the group, hosting its store) and rollout
        actor i (rank i + 1). Every member must be joining at once, hence one ray.get."""
        host, port = ray.get(learners.actors[0].weight_group_address.remote())
        world = 1 + len(rollout_actors)
        ray.get(
            [learners.actors[0].join_weight_group.remote(host, port, 0, world, backend, timeout_s)]
            + [a.join_weight_group.remote(host, port, i + 1, world, backend, timeout_s) for i, a in enumerate(rollout_actors)]
        )

    def broadcast(self, learners: LearnerGroup, rollout_actors: list, version: int) -> float:
        started = time.perf_counter()
        # every learner rank takes part in gathering the full weights; rank 0 also sends them
        ray.get([a.send_weights.remote(version) for a in learners.actors] + [a.receive_weights.remote() for a in rollout_actors])
        return time.perf_counter() - started


def make_weight_sync(cluster: ClusterConfig, learners: LearnerGroup, rollout_actors: list) -> WeightSync:
    if cluster.weight_sync == "object_store":
        return ObjectStoreSync()
    if cluster.weight_sync == "collective":
        on_gpus = cluster.learner_gpus > 0 and cluster.rollout_gpus > 0
        return CollectiveSync(learners, rollout_actors, "nccl" if on_gpus else "gloo", cluster.weight_sync_timeout_s)
    raise ValueError(f"cluster.weight_sync: unknown backend {cluster.weight_sync!r} (available: object_store, collective)")
