"""The paper's five self-correction metrics, from graded traces. Percentage points throughout."""
from __future__ import annotations

import numpy as np

from protos import TraceMeta, rewards

METRIC_NAMES = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")
# Grades that are neither right nor wrong: where a policy gaming the grader would show first.
FLAGGED = ("timeout", "sandbox_violation", "error")


def is_right(reward):
    """A reward (or an array of them) read as right or wrong: the one rule the metrics, the suite's
    statistics and its stored outcomes share (rewards are 0 or 1; above one half counts as right)."""
    return np.asarray(reward) > 0.5


def self_correction_metrics(r1: np.ndarray, r2: np.ndarray) -> dict[str, float]:
    """Acc@t1, Acc@t2, Δ(t1,t2), Δi→c (wrong then right), Δc→i (right then wrong), as % of problems."""
    c1, c2 = is_right(r1), is_right(r2)
    if c1.shape != c2.shape or c1.size == 0:
        raise ValueError(f"need two equal, non-empty reward arrays, got {c1.shape} and {c2.shape}")
    pct = lambda mask: 100.0 * float(mask.mean())  # noqa: E731
    return {
        "acc_t1": pct(c1),
        "acc_t2": pct(c2),
        "delta": pct(c2) - pct(c1),
        "delta_i2c": pct(~c1 & c2),
        "delta_c2i": pct(c1 & ~c2),
    }


def trace_metrics(meta: list[TraceMeta]) -> dict[str, float]:
    """The five metrics over the traces whose both attempts got a verdict, how often attempt 2
    repeats attempt 1 (the paper's collapse signal), how many traces got no verdict (`ungraded`: they
    are left out, never counted as wrong; all of them ungraded gives NaN metrics), and how many
    attempts (two per trace) the grader flagged, by status (`flagged_timeout`, ...)."""
    r = rewards(meta)
    graded = np.isfinite(r).all(axis=1)
    if graded.any():
        out = self_correction_metrics(r[graded, 0], r[graded, 1])
    else:
        out = dict.fromkeys(METRIC_NAMES, float("nan"))
    out["same_answer"] = 100.0 * float(np.mean([m.attempt1.strip() == m.attempt2.strip() for m in meta]))
    out["ungraded"] = int((~graded).sum())
    statuses = [g.status for m in meta for g in (m.grade1, m.grade2) if g is not None]
    out.update({f"flagged_{status}": statuses.count(status) for status in FLAGGED})
    return out


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Rows of metrics side by side, e.g. {"base": {...}, "trained": {...}}."""
    names = ["Acc@t1", "Acc@t2", "Δ(t1,t2)", "Δi→c", "Δc→i", "same answer"]
    keys = [*METRIC_NAMES, "same_answer"]
    width = max(len(r) for r in rows) + 2
    lines = [" " * width + "".join(f"{n:>12}" for n in names)]
    for label, m in rows.items():
        lines.append(f"{label:<{width}}" + "".join(f"{m[k]:>12.1f}" if k in m else f"{'-':>12}" for k in keys))
    return "\n".join(lines)
