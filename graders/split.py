"""A fixed train / held-out split of a finite problem set, decided by a stable hash of each id.

The hash, not the file order or a seed, decides: a problem stays on its side when others are added
or removed, and every process and run agrees on the split.
"""
from __future__ import annotations

import hashlib

import numpy as np

from graders.base import Task
from protos import Problem


def held_out(problem_id: str, eval_fraction: float) -> bool:
    digest = hashlib.sha256(problem_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


class HashSplit:
    def __init__(self, problems: list[Problem], eval_fraction: float, source: str):
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{source}: problem ids are not unique")
        self.source = source
        self.eval = [p for p in problems if held_out(p.id, eval_fraction)]
        self.train = [p for p in problems if not held_out(p.id, eval_fraction)]
        if not self.eval or not self.train:
            raise ValueError(f"{source}: {len(problems)} problems leave the train or held-out split empty")

    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        # Without replacement while the split has enough, so a batch never repeats a problem needlessly.
        picks = rng.choice(len(self.train), size=n, replace=n > len(self.train))
        return [self.train[i] for i in picks]

    def eval_problems(self, n: int) -> list[Problem]:
        if n > len(self.eval):
            raise ValueError(
                f"task.eval_offset + task.eval_size = {n} exceeds the held-out split of {self.source} ({len(self.eval)} problems)"
            )
        return self.eval[:n]


class SplitTask(Task):
    """A task over a finite problem set (a file, a package), split once by HashSplit."""

    def _split_problems(self, problems: list[Problem], eval_fraction: float, source: str) -> None:
        self._by_id = {p.id: p for p in problems}
        self._split = HashSplit(problems, eval_fraction, source)

    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        return self._split.train_problems(n, rng)

    def eval_problems(self, n: int) -> list[Problem]:
        return self._split.eval_problems(n)

    def problem(self, problem_id: str) -> Problem:
        if problem_id not in self._by_id:
            raise KeyError(f"no problem {problem_id!r} in {self._split.source}")
        return self._by_id[problem_id]
