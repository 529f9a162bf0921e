"""Pair-SFT's training rows (Welleck et al. 2023; a baseline of the SCoRe paper): each wrong first
attempt of the base model paired with a correct response to the same problem.

From a graded batch of two-attempt traces [x, y1, p, y2] (k per problem), every trace whose y1 is
wrong becomes a row [x, y1, p, y*], y* a correct response to the same problem from the batch: a
correct first attempt (of another sample, necessarily), or a correct second attempt (its own
included). A problem's correct responses are used in turn, so no single one is copied into every
row; a problem with no correct response, or no wrong first attempt, gives no row. Each row's
rewards are (0, 1), attempt 1 wrong and attempt 2 right, which is what the imitation loss trains on
(learner/training/losses.py).

y*'s engine and reference log-probs come along from the trace that sampled it, so they are the
log-probs of y* in *its* context, not in the new row's: they serve the learner-vs-engine statistics
only, since Pair-SFT's loss has neither an importance ratio nor a KL term.
"""
from __future__ import annotations

import numpy as np

from protos import ATTEMPT1, ATTEMPT2, TraceBatch


def repair_pairs(batch: TraceBatch, rewards: np.ndarray) -> tuple[TraceBatch, np.ndarray]:
    """The Pair-SFT rows of `batch` (graded: `rewards` [n, 2], no NaN) and their rewards. A batch that
    gives no row is returned as it is with rewards of 0, so the loss trains on none of it."""
    rows = []  # (group, [per-array prefix, response]) of each new row
    for group in np.unique(batch.groups):
        members = np.flatnonzero(batch.groups == group)
        wrong = [i for i in members if rewards[i, 0] < 0.5]
        correct = [(i, ATTEMPT1) for i in members if rewards[i, 0] > 0.5]
        correct += [(i, ATTEMPT2) for i in members if rewards[i, 1] > 0.5]
        for n, i in enumerate(wrong if correct else []):
            j, segment = correct[n % len(correct)]
            prefix = slice(0, _attempt2_start(batch, i))
            response = np.flatnonzero(batch.segment[j, : batch.lengths[j]] == segment)
            rows.append((group, [(a[i, prefix], a[j, response]) for a in _arrays(batch)]))
    if not rows:
        return batch, np.zeros_like(rewards)
    lengths = np.array([len(parts[0][0]) + len(parts[0][1]) for _, parts in rows], dtype=np.int64)
    width = int(lengths.max())
    out = []
    for k, array in enumerate(_arrays(batch)):
        filled = np.zeros((len(rows), width), dtype=array.dtype)  # past `lengths` nothing is read
        for r, (_, parts) in enumerate(rows):
            prefix, response = parts[k]
            filled[r, : len(prefix)] = prefix
            filled[r, len(prefix): len(prefix) + len(response)] = ATTEMPT2 if k == 1 else response
        out.append(filled)
    tokens, segment, sample_logprobs, *ref = out
    groups = np.array([group for group, _ in rows], dtype=np.int64)
    paired = TraceBatch(groups, tokens, segment, lengths, sample_logprobs, ref[0] if ref else None)
    return paired, np.tile(np.array([0.0, 1.0], dtype=rewards.dtype), (len(rows), 1))


def _arrays(batch: TraceBatch) -> list[np.ndarray]:
    """The per-token arrays of a batch, in TraceBatch's order: tokens, segment, engine log-probs, and
    the reference's log-probs where the rollout actor scored them."""
    arrays = [batch.tokens, batch.segment, batch.sample_logprobs]
    return arrays + ([batch.ref_logprobs] if batch.ref_logprobs is not None else [])


def _attempt2_start(batch: TraceBatch, i: int) -> int:
    """Where row i's attempt 2 begins: the end of [x, y1, p]."""
    starts = np.flatnonzero(batch.segment[i, : batch.lengths[i]] == ATTEMPT2)
    return int(starts[0]) if len(starts) else int(batch.lengths[i])
