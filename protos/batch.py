"""TraceBatch: a batch of two-attempt traces as padded numpy arrays plus per-trace metadata.

One row is the token sequence [x1, y1, p, y2]: the task prompt, attempt 1, the self-correction
instruction, attempt 2. `segment` says which part each token belongs to, so the learner can score
both attempts with one forward pass (causality makes y1's log-probs the ones conditioned on x1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from protos.messages import TraceMeta

CONTEXT, ATTEMPT1, ATTEMPT2 = 0, 1, 2  # segment codes; padding is masked by `lengths`


@dataclass
class TraceBatch:
    policy_version: int
    meta: list[TraceMeta]
    tokens: np.ndarray  # int64 [n, T], right-padded with pad_id
    segment: np.ndarray  # int8 [n, T]: CONTEXT / ATTEMPT1 / ATTEMPT2
    lengths: np.ndarray  # int64 [n]
    sample_logprobs: np.ndarray  # float32 [n, T]: the engine's log-prob of each sampled token, 0 elsewhere
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.meta)

    @classmethod
    def from_parts(
        cls,
        policy_version: int,
        meta: list[TraceMeta],
        prompts: Sequence[Sequence[int]],
        attempts1: Sequence[Sequence[int]],
        instruction: Sequence[int],
        attempts2: Sequence[Sequence[int]],
        logprobs1: Sequence[Sequence[float]],
        logprobs2: Sequence[Sequence[float]],
        pad_id: int,
    ) -> "TraceBatch":
        n = len(meta)
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
        return cls(policy_version, meta, tokens, segment, lengths, logprobs)

    @classmethod
    def concat(cls, batches: Sequence["TraceBatch"]) -> "TraceBatch":
        """One batch from several of the same policy version; prompt groups stay distinct."""
        versions = {b.policy_version for b in batches}
        if len(versions) != 1:
            raise ValueError(f"cannot mix policy versions {sorted(versions)} in one batch")
        meta, offset = [], 0
        for b in batches:
            meta += [m.model_copy(update={"group": m.group + offset}) for m in b.meta]
            offset += max((m.group for m in b.meta), default=-1) + 1
        width = max(b.tokens.shape[1] for b in batches)
        pad = lambda a, value: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value)  # noqa: E731
        timings: dict[str, float] = {}
        for b in batches:
            for key, value in b.timings.items():
                timings[key] = timings.get(key, 0.0) + value
        return cls(
            versions.pop(),
            meta,
            np.concatenate([pad(b.tokens, 0) for b in batches]),  # past `lengths` nothing is read
            np.concatenate([pad(b.segment, 0) for b in batches]),
            np.concatenate([b.lengths for b in batches]),
            np.concatenate([pad(b.sample_logprobs, 0.0) for b in batches]),
            timings,
        )

    def rewards(self) -> tuple[np.ndarray, np.ndarray]:
        """(r1, r2) as float arrays; an ungraded attempt is an error, not a silent zero."""
        missing = [m.problem_id for m in self.meta if m.grade1 is None or m.grade2 is None]
        if missing:
            raise ValueError(f"{len(missing)} traces are ungraded, e.g. {missing[0]}")
        r1 = np.array([m.grade1.reward for m in self.meta], dtype=np.float32)
        r2 = np.array([m.grade2.reward for m in self.meta], dtype=np.float32)
        return r1, r2

    def groups(self) -> np.ndarray:
        return np.array([m.group for m in self.meta], dtype=np.int64)

    def select(self, rows: np.ndarray) -> "TraceBatch":
        """The sub-batch of `rows` (used to shard a batch across learner workers)."""
        rows = np.asarray(rows, dtype=np.int64)
        width = int(self.lengths[rows].max()) if len(rows) else 0
        return TraceBatch(
            self.policy_version,
            [self.meta[i] for i in rows],
            self.tokens[rows, :width],
            self.segment[rows, :width],
            self.lengths[rows],
            self.sample_logprobs[rows, :width],
            dict(self.timings),
        )
