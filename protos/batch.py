"""A rollout batch in two parts: `TraceBatch`, the token arrays the learner trains on, and
`BatchInfo`, the small part the driver reads (texts, grades, version, timings).

The arrays go from rollout actor to learner through Ray's object store and never visit the
driver; the driver grades the texts and hands the learner one reward pair per trace.

One row of a TraceBatch is the token sequence [x1, y1, p, y2]: the task prompt, attempt 1, the
self-correction instruction, attempt 2. `segment` says which part each token belongs to, so the
learner can score both attempts with one forward pass (causality makes y1's log-probs the ones
conditioned on x1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from protos.messages import Grade, TraceMeta

CONTEXT, ATTEMPT1, ATTEMPT2 = 0, 1, 2  # segment codes; padding is masked by `lengths`


@dataclass
class BatchInfo:
    """What the driver sees of one rollout batch."""

    policy_version: int  # the weights the engine held while sampling (read from the engine)
    meta: list[TraceMeta]  # one per trace, in row order; grading fills in grade1 / grade2
    rollout_s: float
    rollout_tokens: int  # tokens generated, both attempts
    reference_s: float = 0.0  # scoring the batch with the reference policy on the rollout actor (0: not done there)

    def set_grades(self, grades: Sequence[tuple[Grade, Grade]]) -> None:
        """(attempt 1, attempt 2) grades, one pair per trace in row order."""
        if len(grades) != len(self.meta):
            raise ValueError(f"{len(grades)} grade pairs for {len(self.meta)} traces")
        for m, (g1, g2) in zip(self.meta, grades):
            m.grade1, m.grade2 = g1, g2


@dataclass
class TraceBatch:
    groups: np.ndarray  # int64 [n]: the prompt each row samples; the k samples of a prompt share it
    tokens: np.ndarray  # int64 [n, T], right-padded with pad_id
    segment: np.ndarray  # int8 [n, T]: CONTEXT / ATTEMPT1 / ATTEMPT2
    lengths: np.ndarray  # int64 [n]
    sample_logprobs: np.ndarray  # float32 [n, T]: the engine's log-prob of each sampled token, 0 elsewhere
    # float32 [n, T]: the reference policy's log-prob of each token, when the rollout actor scored
    # it (cluster.reference_on=rollout); None = the learner scores the reference itself
    ref_logprobs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.groups)

    @classmethod
    def from_parts(
        cls,
        groups: Sequence[int],
        prompts: Sequence[Sequence[int]],
        attempts1: Sequence[Sequence[int]],
        instruction: Sequence[int],
        attempts2: Sequence[Sequence[int]],
        logprobs1: Sequence[Sequence[float]],
        logprobs2: Sequence[Sequence[float]],
        pad_id: int,
    ) -> "TraceBatch":
        n = len(groups)
        rows = [list(x) + list(y1) + list(instruction) + list(y2) for x, y1, y2 in zip(prompts, attempts1, attempts2)]
        width = max(len(r) for r in rows)
        tokens = np.full((n, width), pad_id, dtype=np.int64)
        segment = np.zeros((n, width), dtype=np.int8)
        logprobs = np.zeros((n, width), dtype=np.float32)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = row
            a1 = len(prompts[i])
            a2 = a1 + len(attempts1[i]) + len(instruction)
            segment[i, a1 : a1 + len(attempts1[i])] = ATTEMPT1
            segment[i, a2 : a2 + len(attempts2[i])] = ATTEMPT2
            logprobs[i, a1 : a1 + len(attempts1[i])] = logprobs1[i]
            logprobs[i, a2 : a2 + len(attempts2[i])] = logprobs2[i]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        return cls(np.asarray(groups, dtype=np.int64), tokens, segment, lengths, logprobs)

    @classmethod
    def concat(cls, batches: Sequence["TraceBatch"]) -> "TraceBatch":
        """One batch from several (they may come from different policy versions: each row keeps the
        engine's log-probs it was sampled with); prompt groups stay distinct."""
        groups, offset = [], 0
        for b in batches:
            groups.append(b.groups + offset)
            offset += int(b.groups.max(initial=-1)) + 1
        width = max(b.tokens.shape[1] for b in batches)
        pad = lambda a, value: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value)  # noqa: E731
        scored = {b.ref_logprobs is not None for b in batches}
        if len(scored) > 1:
            raise ValueError("some batches carry reference log-probs and some do not: one run scores them in one place")
        return cls(
            np.concatenate(groups),
            np.concatenate([pad(b.tokens, 0) for b in batches]),  # past `lengths` nothing is read
            np.concatenate([pad(b.segment, 0) for b in batches]),
            np.concatenate([b.lengths for b in batches]),
            np.concatenate([pad(b.sample_logprobs, 0.0) for b in batches]),
            np.concatenate([pad(b.ref_logprobs, 0.0) for b in batches]) if scored == {True} else None,
        )

    def select(self, rows: np.ndarray) -> "TraceBatch":
        """The sub-batch of `rows` (used to shard a batch across learner workers)."""
        rows = np.asarray(rows, dtype=np.int64)
        width = int(self.lengths[rows].max()) if len(rows) else 0
        return TraceBatch(
            self.groups[rows],
            self.tokens[rows, :width],
            self.segment[rows, :width],
            self.lengths[rows],
            self.sample_logprobs[rows, :width],
            None if self.ref_logprobs is None else self.ref_logprobs[rows, :width],
        )


def rewards(meta: Sequence[TraceMeta]) -> np.ndarray:
    """float32 [n, 2]: (r1, r2) per trace, NaN where the grader gave no verdict (status "error").
    A trace never sent to grading is an error, not a silent zero."""
    missing = [m.problem_id for m in meta if m.grade1 is None or m.grade2 is None]
    if missing:
        raise ValueError(f"{len(missing)} traces were never graded, e.g. {missing[0]}")
    reward = lambda g: g.reward if g.given else np.nan  # noqa: E731
    return np.array([[reward(m.grade1), reward(m.grade2)] for m in meta], dtype=np.float32).reshape(-1, 2)


def graded_groups(r: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """bool [n]: the rows whose whole prompt group has both attempts graded. Training keeps only
    these: a group's advantages compare its samples with each other, so one ungraded sample
    leaves the whole group without a baseline."""
    ungraded = ~np.isfinite(r).all(axis=1)
    return ~np.isin(groups, groups[ungraded])
