"""Weight transport: how the learner's new weights reach the rollout engines. Both ends live here.

Two backends behind one interface (`WeightSync.broadcast`), chosen by `cluster.weight_sync`:

`ObjectStoreSync` (any cluster, the CPU default): learner rank 0 puts the full state dict in Ray's
object store once; every rollout actor is handed the same ref and loads it in place.

`CollectiveSync` (GPU clusters, as OpenRLHF and verl do it): learner rank 0 and the rollout
engines form a torch.distributed group of their own (`WeightBroadcastGroup`) and the weights are
broadcast over it, GPU to GPU with NCCL, never through host memory or the object store. On CPU
nodes the same group runs on gloo, which is how CI exercises it. Every collective has a deadline,
so a dead rollout engine or learner is an error, not a hang.

The actors' side: `WeightSender` (mixed into the learner's Ray actor) and `WeightReceiver` (mixed
into the rollout actor) are the methods the two backends call on them. A rollout actor takes them
on its "weights" thread, next to the rollout in progress, and stages what it receives: the engine
loads it between requests (actors/rollout.py). So neither backend ever waits for a rollout to end,
and a collective broadcast costs the learner the transfer only, not the engines' time to finish.
"""
from __future__ import annotations

import pickle
import time
from abc import ABC, abstractmethod
from datetime import timedelta

import torch
import torch.distributed as dist

from protos.config import ClusterConfig

SENDER = 0


class WeightBroadcastGroup:
    """Weights from learner rank 0 to the rollout engines over a process group of their own.

    Rank 0 (the learner's rank 0) sends; ranks 1..N (one per rollout engine) receive. The group is
    stateless in the OpenRLHF/verl sense: its own TCP store hosted by rank 0, never torch's default
    group, which the learner's FSDP workers already own and the engines do not belong to. NCCL
    moves GPU tensors; gloo runs the same code on CPU. Every collective waits at most `timeout_s`.

    Wire format per update: the byte length of a pickled header, the header (version and the
    name/dtype/shape of every tensor, so receivers need no model of their own to allocate), then
    each tensor in header order.
    """

    def __init__(
        self,
        host: str,
        port: int,
        rank: int,
        world_size: int,
        backend: str = "nccl",
        timeout_s: float = 120.0,
        device: str | torch.device | None = None,
    ):
        """Blocks until all `world_size` ranks have joined (or `timeout_s` passes: error)."""
        self.rank = rank
        self.timeout = timedelta(seconds=timeout_s)
        self.device = torch.device(device or ("cuda" if backend == "nccl" else "cpu"))
        store = dist.TCPStore(host, port, world_size, is_master=rank == SENDER, timeout=self.timeout)
        if backend == "gloo":
            self.group = dist.ProcessGroupGloo(store, rank, world_size, self.timeout)
        elif backend == "nccl":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = self.timeout
            self.group = dist.ProcessGroupNCCL(store, rank, world_size, options)
        else:
            raise ValueError(f"weight broadcast backend must be nccl or gloo, got {backend!r}")
        self._store = store  # the group reads and writes it for as long as it lives

    def send(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        assert self.rank == SENDER, "only rank 0 sends"
        layout = [(name, t.dtype, tuple(t.shape)) for name, t in state_dict.items()]
        header = torch.frombuffer(bytearray(pickle.dumps((version, layout))), dtype=torch.uint8)
        self._broadcast(torch.tensor([header.numel()], dtype=torch.int64))
        self._broadcast(header)
        for tensor in state_dict.values():
            self._broadcast(tensor.detach())

    def receive(self) -> tuple[int, dict[str, torch.Tensor]]:
        assert self.rank != SENDER, "rank 0 sends"
        length = self._broadcast(torch.zeros(1, dtype=torch.int64))
        header = self._broadcast(torch.empty(int(length.item()), dtype=torch.uint8))
        version, layout = pickle.loads(header.cpu().numpy().tobytes())
        state_dict = {
            name: self._broadcast(torch.empty(shape, dtype=dtype, device=self.device))
            for name, dtype, shape in layout
        }
        return version, state_dict

    def close(self) -> None:
        self.group.shutdown()

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Broadcast from rank 0 in place; returns the tensor as it is on this rank's device."""
        on_device = tensor.to(self.device).contiguous()
        # wait(timeout) blocks the CPU until done and raises on timeout, NCCL included
        self.group.broadcast(on_device, SENDER, self.timeout).wait(self.timeout)
        return on_device


class WeightGroupMember:
    """Joining the collective group: the same on both ends."""

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
        self.weight_group = WeightBroadcastGroup(host, port, rank, world_size, backend, timeout_s)


class WeightSender(WeightGroupMember):
    """The learner's end. Needs `full_state_dict()` (a collective over the learner's ranks: every
    rank calls it, rank 0 gets the weights)."""

    def send_weights(self, version: int) -> None:
        state = self.full_state_dict()
        if state is not None:
            self.weight_group.send(version, state)


class WeightReceiver(WeightGroupMember):
    """A rollout engine's end. Needs `load_weights(version, state_dict)` (which may stage them)."""

    def receive_weights(self) -> int:
        version, state_dict = self.weight_group.receive()
        self.load_weights(version, state_dict)
        return version

    def update_weights(self, version: int, state_dict: dict) -> int:
        # `state_dict` arrives as the resolved ObjectRef the learner put once for every actor
        self.load_weights(version, state_dict)
        return version


class WeightSync(ABC):
    @abstractmethod
    def broadcast(self, learners, rollout_actors: list, version: int) -> float:
        """Push the learner's current weights as `version` to every rollout actor; returns seconds."""

    @abstractmethod
    def bring_up(self, learners, rollout_actors: list, new_actors: list, version: int) -> None:
        """Give `new_actors` (already in `rollout_actors`, in place of dead ones) the learner's
        current weights as `version`, and whatever membership the transport needs."""


class ObjectStoreSync(WeightSync):
    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s

    def broadcast(self, learners, rollout_actors: list, version: int) -> float:
        import ray

        started = time.perf_counter()
        state_ref = learners.state_dict_ref()
        ray.get([_weights_thread(a.update_weights).remote(version, state_ref) for a in rollout_actors],
                timeout=self.timeout_s)  # a hung actor is an error, not a hang
        return time.perf_counter() - started

    def bring_up(self, learners, rollout_actors: list, new_actors: list, version: int) -> None:
        self.broadcast(learners, new_actors, version)


class CollectiveSync(WeightSync):
    def __init__(self, learners, rollout_actors: list, backend: str, timeout_s: float):
        self.backend, self.timeout_s = backend, timeout_s
        self._form(learners, rollout_actors)

    def _form(self, learners, rollout_actors: list) -> None:
        """The group: learner rank 0 (rank 0 of the group, hosting its store) and rollout actor i
        (rank i + 1). Every member must be joining at once, hence one ray.get."""
        import ray

        backend, timeout_s = self.backend, self.timeout_s
        host, port = ray.get(learners.actors[0].weight_group_address.remote())
        world = 1 + len(rollout_actors)
        ray.get(
            [learners.actors[0].join_weight_group.remote(host, port, 0, world, backend, timeout_s)]
            + [_weights_thread(a.join_weight_group).remote(host, port, i + 1, world, backend, timeout_s)
               for i, a in enumerate(rollout_actors)]
        )

    def broadcast(self, learners, rollout_actors: list, version: int) -> float:
        import ray

        started = time.perf_counter()
        # every learner rank takes part in gathering the full weights; rank 0 also sends them
        ray.get([a.send_weights.remote(version) for a in learners.actors]
                + [_weights_thread(a.receive_weights).remote() for a in rollout_actors])
        return time.perf_counter() - started

    def bring_up(self, learners, rollout_actors: list, new_actors: list, version: int) -> None:
        # A group's membership is fixed when it forms: every member joins a new one (on a new port;
        # each drops its old group), and all are sent the weights again.
        self._form(learners, rollout_actors)
        self.broadcast(learners, rollout_actors, version)


def _weights_thread(method):
    """A rollout actor's method, called on its "weights" thread (not behind queued rollouts)."""
    return method.options(concurrency_group="weights")


def make_weight_sync(cluster: ClusterConfig, learners, rollout_actors: list) -> WeightSync:
    """`learners` is a learner.training.group.LearnerGroup (duck-typed: actors/ does not import learner/)."""
    if cluster.weight_sync == "object_store":
        return ObjectStoreSync(cluster.weight_sync_timeout_s)
    if cluster.weight_sync == "collective":
        on_gpus = cluster.learner_gpus > 0 and cluster.rollout_gpus > 0
        return CollectiveSync(learners, rollout_actors, "nccl" if on_gpus else "gloo", cluster.weight_sync_timeout_s)
    raise ValueError(f"cluster.weight_sync: unknown backend {cluster.weight_sync!r} (available: object_store, collective)")
