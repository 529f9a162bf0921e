"""Grade both attempts of every trace in a batch, with any `grade_batch(problems, completions)`."""
from __future__ import annotations

from typing import Callable

from protos import Grade, Problem, TraceBatch

GradeBatch = Callable[[list[Problem], list[str]], list[Grade]]


def grade_traces(grade_batch: GradeBatch, problems: list[Problem], batch: TraceBatch) -> TraceBatch:
    by_id = {p.id: p for p in problems}
    targets = [by_id[m.problem_id] for m in batch.meta]
    grades = grade_batch(targets + targets, [m.attempt1 for m in batch.meta] + [m.attempt2 for m in batch.meta])
    n = len(batch.meta)
    for m, g1, g2 in zip(batch.meta, grades[:n], grades[n:]):
        m.grade1, m.grade2 = g1, g2
    return batch


def grade_with_pool(pool, problems: list[Problem], batch: TraceBatch) -> TraceBatch:
    """Body of the Ray task that grades a batch by ref: the batch never visits the controller."""
    return grade_traces(pool.grade, problems, batch)
