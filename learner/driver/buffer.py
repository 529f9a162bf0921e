"""TraceBuffer: graded rollout batches waiting for the learner, a bounded FIFO in the driver.

It holds each batch's small BatchInfo and a handle to its arrays (an ObjectRef: the arrays stay in
Ray's object store and go from rollout actor to learner without visiting the driver; in-process,
the batch itself). Bounded by reservation: the loop reserves a slot before it requests a rollout,
so a full buffer holds rollouts back (back-pressure) and a finished rollout always has a place.
Nothing is ever dropped silently: a put without a reservation is an error, and a batch too stale
to train on is dropped by `take` and counted.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from common import telemetry
from protos import BatchInfo


class BufferFull(RuntimeError):
    """More rollouts requested than the buffer can hold."""


class TraceBuffer:
    def __init__(self, capacity: int, max_policy_lag: int = 0):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.max_policy_lag = capacity, max_policy_lag
        self._entries: deque[tuple[BatchInfo, Any]] = deque()
        self.reserved = 0
        self.dropped_stale = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def free(self) -> int:
        return self.capacity - len(self._entries) - self.reserved

    def reserve(self, n: int) -> None:
        """Hold n slots for rollouts about to be requested."""
        if n > self.free:
            raise BufferFull(
                f"{n} rollout batches requested but the trace buffer has {self.free} of {self.capacity} slots free "
                "(cluster.buffer_capacity must hold at least one step's batches: one per rollout actor)"
            )
        self.reserved += n

    def put(self, info: BatchInfo, handle: Any) -> None:
        """Add a finished batch into a slot reserved for it."""
        if self.reserved < 1:
            raise BufferFull("a rollout batch arrived without a reserved slot: it would have been dropped")
        self.reserved -= 1
        self._entries.append((info, handle))
        telemetry.record_buffer(len(self._entries))

    def take(self, current_version: int, n: int) -> tuple[list[tuple[BatchInfo, Any]], list[BatchInfo]]:
        """The next n batches, oldest first: those at most max_policy_lag versions behind
        `current_version`, and the infos of the ones that were older, dropped and counted."""
        fresh, stale, lags = [], [], []
        for _ in range(min(n, len(self._entries))):
            info, handle = self._entries.popleft()
            lag = current_version - info.policy_version
            if lag > self.max_policy_lag:
                self.dropped_stale += 1
                stale.append(info)
            else:
                fresh.append((info, handle))
                lags.append(lag)
        telemetry.record_buffer(len(self._entries), max(lags, default=None))
        return fresh, stale
