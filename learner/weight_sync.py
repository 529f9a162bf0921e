"""Moving the learner's weights into the rollout engines, behind one interface.

`ObjectStoreSync` (CPU, and any cluster): rank 0 puts the full state dict in Ray's object store
once; every rollout actor is handed the same ref and loads it in place. An NCCL backend for GPU
clusters implements the same `broadcast` (issue: vLLM engine / NCCL sync).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

import ray

from learner.group import LearnerGroup


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


def make_weight_sync(kind: str) -> WeightSync:
    if kind == "object_store":
        return ObjectStoreSync()
    raise ValueError(f"cluster.weight_sync: unknown backend {kind!r} (available: object_store)")
