"""Recoveries within a run's job, of both kinds, under one limit (`cluster.max_restarts`):

- a dead or unresponsive rollout actor is replaced in place (learner/driver/ray_backend.py): the new
  one is sent the current weights and the requests the dead one had not answered; no step is lost;
- a dead learner rank takes every actor down with it (learner/main.py): all are rebuilt and the run
  continues from its last checkpoint, losing the steps since.

Each is logged and recorded as one line of the run's recoveries.jsonl, with what it cost.
"""
from __future__ import annotations

import time
from typing import Callable

from common.logs import describe


class Recoveries:
    def __init__(self, limit: int, record: Callable[[dict], None], log: Callable[[str], None]):
        self.limit, self.record, self.log = limit, record, log
        self.count = 0

    def begin(self, error: BaseException, action: str) -> float:
        """Count one recovery from `error` and say what it does; once the run has had `limit` of
        them, re-raise `error` instead (the run fails, and --resume can continue it). Returns when
        it began, for `done`."""
        self.count += 1
        if self.count > self.limit:
            raise error
        self.log(f"{describe(error)}. Recovery {self.count}/{self.limit}: {action}")
        return time.perf_counter()

    def done(self, began: float, error: BaseException, kind: str, **event) -> None:
        self.record({"kind": kind, "error": describe(error), **event,
                     "seconds": round(time.perf_counter() - began, 1)})
