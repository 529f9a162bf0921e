"""Pair-SFT's training rows (Welleck et al. 2023; a baseline of the SCoRe paper): each wrong first
attempt of the base model paired with a correct response to the same problem.

From a graded batch of two-attempt traces [x, y1, p, y2] (k per problem), every trace whose y1 is
wrong becomes a row [x, y1, p, y*], y* a correct response to the same problem from the batch: a
correct first attempt (of another sample, necessarily), or a correct second attempt (its own
included). A problem's correct responses are used in turn, so no single one is copied into every
row; a problem with no correct response, or no wrong first attempt, gives no row. Each row's
rewards are (0, 1), attempt 1 wrong and attempt 2 right, which is what the imitation loss trains on
(learner/training/losses.py).

y*'s engine log-probs come along from the trace that sampled it, so they are those of y* in *its*
context, not in the new row's: they serve the learner-vs-engine statistics only (Pair-SFT's loss
has no importance ratio). The rows carry no reference log-probs: the learner scores them with the
reference model itself (for Pair-SFT it always holds one; learner/driver/loop.py's reference_kwargs).
"""
from __future__ import annotations

import numpy as np

from protos import ATTEMPT1, ATTEMPT2, TraceBatch


def repair_pairs(batch: TraceBatch, rewards: np.ndarray) -> tuple[TraceBatch, np.ndarray]:
    """The Pair-SFT rows of `batch` (graded: `rewards` [n, 2], no NaN) and their rewards. A batch that
    gives no row is returned as it is with rewards of 0, so the loss trains on none of it."""
    rows = []  # (group, i: the trace of the wrong y1, j: the trace of y*, y*'s positions in j)
    for group in np.unique(batch.groups):
        members = np.flatnonzero(batch.groups == group)
        wrong = [i for i in members if rewards[i, 0] < 0.5]
        correct = [(i, ATTEMPT1) for i in members if rewards[i, 0] > 0.5]
        correct += [(i, ATTEMPT2) for i in members if rewards[i, 1] > 0.5]
        for n, i in enumerate(wrong if correct else []):
            j, segment = correct[n % len(correct)]
            rows.append((group, i, j, np.flatnonzero(batch.segment[j, : batch.lengths[j]] == segment)))
    if not rows:
        return batch, np.zeros_like(rewards)
    starts = [_attempt2_start(batch, i) for _, i, _, _ in rows]  # each row's [x, y1, p] is trace i's
    lengths = np.array([start + len(response) for start, (_, _, _, response) in zip(starts, rows)], dtype=np.int64)
    width = int(lengths.max())
    tokens = np.zeros((len(rows), width), dtype=batch.tokens.dtype)  # past `lengths` nothing is read
    segment = np.zeros((len(rows), width), dtype=batch.segment.dtype)
    sample_logprobs = np.zeros((len(rows), width), dtype=batch.sample_logprobs.dtype)
    for r, (start, (_, i, j, response)) in enumerate(zip(starts, rows)):
        end = start + len(response)
        tokens[r, :start], tokens[r, start:end] = batch.tokens[i, :start], batch.tokens[j, response]
        segment[r, :start], segment[r, start:end] = batch.segment[i, :start], ATTEMPT2
        sample_logprobs[r, :start], sample_logprobs[r, start:end] = batch.sample_logprobs[i, :start], batch.sample_logprobs[j, response]
    groups = np.array([group for group, _, _, _ in rows], dtype=np.int64)
    paired = TraceBatch(groups, tokens, segment, lengths, sample_logprobs, ref_logprobs=None)
    return paired, np.tile(np.array([0.0, 1.0], dtype=rewards.dtype), (len(rows), 1))


def _attempt2_start(batch: TraceBatch, i: int) -> int:
    """Where row i's attempt 2 begins: the end of [x, y1, p]."""
    starts = np.flatnonzero(batch.segment[i, : batch.lengths[i]] == ATTEMPT2)
    return int(starts[0]) if len(starts) else int(batch.lengths[i])
