"""TraceBuffer: a bounded queue of trace-batch ObjectRefs, tagged with the policy version that made them.

It holds references, never the batches: data stays in Ray's object store and moves from rollout
actor to grader to learner without passing through the controller or this actor.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from learner import telemetry


@dataclass
class _Entry:
    ref: Any  # an ObjectRef to a graded TraceBatch (any handle works: the buffer never dereferences it)
    version: int
    traces: int


class TraceBuffer:
    def __init__(self, capacity: int, max_policy_lag: int = 0):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.max_policy_lag = capacity, max_policy_lag
        self._entries: deque[_Entry] = deque()
        self.dropped_stale = 0
        self.refused_full = 0

    def put(self, refs: list, version: int, traces: int) -> bool:
        """Add one batch (refs wrapped in a list so Ray passes them through unresolved). False if full."""
        if len(self._entries) >= self.capacity:
            self.refused_full += 1
            return False
        self._entries.append(_Entry(refs[0], version, traces))
        telemetry.record_buffer(len(self._entries))
        return True

    def take(self, current_version: int, max_batches: int) -> list:
        """Up to `max_batches` refs no older than the allowed lag; older ones are dropped, oldest first."""
        out, lags = [], []
        while self._entries and len(out) < max_batches:
            entry = self._entries.popleft()
            if current_version - entry.version > self.max_policy_lag:
                self.dropped_stale += 1
                continue
            out.append(entry.ref)
            lags.append(current_version - entry.version)
        telemetry.record_buffer(len(self._entries), max(lags, default=None))
        return out

    def stats(self) -> dict[str, float]:
        return {
            "depth": len(self._entries),
            "dropped_stale": self.dropped_stale,
            "refused_full": self.refused_full,
            "oldest_version": min((e.version for e in self._entries), default=-1),
        }
