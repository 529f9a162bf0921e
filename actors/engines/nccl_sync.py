"""Weights from learner rank 0 to the rollout engines over a process group of their own.

Rank 0 (the learner's rank 0) sends; ranks 1..N (one per rollout engine) receive and load the
weights in place with `engine.update_weights`. The group is stateless in the OpenRLHF/verl
sense: its own TCP store hosted by rank 0, never torch's default group, which the learner's FSDP
workers already own and the engines do not belong to. NCCL moves GPU tensors; gloo runs the same
code on CPU, which is how it is tested. Every collective waits at most `timeout_s`: a dead or
stalled peer raises instead of hanging the run.

Wire format per update: the byte length of a pickled header, the header (version and the
name/dtype/shape of every tensor, so receivers need no model of their own to allocate), then
each tensor in header order.
"""
from __future__ import annotations

import pickle
from datetime import timedelta

import torch
import torch.distributed as dist

SENDER = 0


class WeightBroadcastGroup:
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

    def receive_into(self, engine) -> int:
        """Receive one update and load it into a GenerationEngine; returns the new version."""
        version, state_dict = self.receive()
        engine.update_weights(version, state_dict)
        return version

    def close(self) -> None:
        self.group.shutdown()

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Broadcast from rank 0 in place; returns the tensor as it is on this rank's device."""
        on_device = tensor.to(self.device).contiguous()
        # wait(timeout) blocks the CPU until done and raises on timeout, NCCL included
        self.group.broadcast(on_device, SENDER, self.timeout).wait(self.timeout)
        return on_device
