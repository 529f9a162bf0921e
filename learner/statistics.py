"""Uncertainty for the experiment suite's tables: bootstrap over problems and seeds.

A method's result is a set of runs (one per seed), each evaluated on the same held-out problems:
per run, per problem, attempt 1 right or wrong and attempt 2 right or wrong, as boolean arrays
c1, c2 of shape [seeds, problems]. Both sources of variance matter: the seeds (training is noisy)
and the problems (a 256-problem evaluation alone has a standard error of ~2.5 points on Δ), so the
bootstrap resamples both: seeds with replacement, and problems with replacement, the same problems
for every resampled seed (the problems are shared by the runs, so they are resampled jointly).
Resampling both levels counts the within-run binomial noise in both, so the interval is somewhat
wider than the variance of the mean calls for: conservative.

Paired comparison of two methods evaluated on the same problems with the same seeds: each
bootstrap draw resamples the same seeds and problems for both, and the statistic is the
difference of their metrics; the pairing cancels the variance of problem difficulty and of the
seed, which both methods share.

The percentile interval: the 2.5th and 97.5th percentiles of the statistic over the draws.
"""
from __future__ import annotations

import numpy as np

from learner.driver.metrics import METRIC_NAMES, is_right


def metrics(c1: np.ndarray, c2: np.ndarray) -> dict[str, np.ndarray]:
    """The five metrics (%, averaged over every axis but the first) of boolean arrays [..., seeds, problems]:
    one value per leading index (a bootstrap draw)."""
    c1, c2 = np.asarray(c1, bool), np.asarray(c2, bool)
    axes = tuple(range(c1.ndim - 2, c1.ndim))
    pct = lambda m: 100.0 * m.mean(axis=axes)  # noqa: E731
    return {
        "acc_t1": pct(c1), "acc_t2": pct(c2), "delta": pct(c2) - pct(c1),
        "delta_i2c": pct(~c1 & c2), "delta_c2i": pct(c1 & ~c2),
    }


def _draws(seeds: int, problems: int, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays of n_boot resamples: seeds [n_boot, seeds, 1], problems [n_boot, 1, problems]."""
    return (rng.integers(0, seeds, size=(n_boot, seeds, 1)), rng.integers(0, problems, size=(n_boot, 1, problems)))


def _check(c1: np.ndarray, c2: np.ndarray) -> None:
    if c1.ndim != 2 or c1.shape != c2.shape or c1.size == 0:
        raise ValueError(f"need two equal, non-empty [seeds, problems] arrays, got {c1.shape} and {c2.shape}")


def bootstrap_ci(c1, c2, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """Per metric: the point value over all runs and problems, and the bootstrap CI [lo, hi]."""
    c1, c2 = np.asarray(c1, bool), np.asarray(c2, bool)
    _check(c1, c2)
    s, p = _draws(*c1.shape, n_boot, np.random.default_rng(seed))
    point, boot = metrics(c1, c2), metrics(c1[s, p], c2[s, p])
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: {"value": float(point[k]), "lo": float(np.percentile(boot[k], q[0])), "hi": float(np.percentile(boot[k], q[1]))}
            for k in METRIC_NAMES}


def paired_difference(a: tuple, b: tuple, keys=("delta", "acc_t2"), n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict[str, dict[str, float]]:
    """Method a minus method b on `keys`, each given as (c1, c2) of shape [seeds, problems] with the
    same seeds and problems in the same order: the difference and its paired-bootstrap CI, and the
    fraction of draws in which a does not exceed b (a one-sided bootstrap p-value for a > b)."""
    (a1, a2), (b1, b2) = [tuple(np.asarray(x, bool) for x in pair) for pair in (a, b)]
    _check(a1, a2)
    _check(b1, b2)
    if a1.shape != b1.shape:
        raise ValueError(f"paired comparison needs the same seeds and problems, got {a1.shape} and {b1.shape}")
    s, p = _draws(*a1.shape, n_boot, np.random.default_rng(seed))
    pa, pb = metrics(a1, a2), metrics(b1, b2)
    ba, bb = metrics(a1[s, p], a2[s, p]), metrics(b1[s, p], b2[s, p])
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    out = {}
    for k in keys:
        d = ba[k] - bb[k]
        out[k] = {"diff": float(pa[k] - pb[k]), "lo": float(np.percentile(d, q[0])), "hi": float(np.percentile(d, q[1])),
                  "p_not_greater": float(np.mean(d <= 0))}
    return out


def outcome_arrays(runs: dict[str, list[list[dict]]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method, (c1, c2) of shape [seeds, problems] from its runs' per-problem evaluation records
    ({"problem_id", "r1", "r2"}, r None where the grader gave no verdict; a run's eval_problems.jsonl).
    Only the problems every run of every method has both verdicts on are kept, in the first run's
    order, so all methods' arrays are aligned for paired comparisons (an ungraded answer is left
    out, never counted as wrong, as in the metrics of a single run)."""
    tables = {m: [{p["problem_id"]: p for p in run} for run in method_runs] for m, method_runs in runs.items()}
    first = next(iter(runs.values()))[0]
    keep = [p["problem_id"] for p in first
            if all(t.get(p["problem_id"], {}).get(k) is not None for ts in tables.values() for t in ts for k in ("r1", "r2"))]
    if not keep:
        raise ValueError("no problem has verdicts in every run")
    return {m: tuple(is_right(np.array([[t[i][k] for i in keep] for t in ts])) for k in ("r1", "r2"))
            for m, ts in tables.items()}


_MARK = {True: "1", False: "0", None: "-"}


def encode_outcomes(runs: dict[str, list[dict]]) -> dict:
    """Every run's per-problem verdicts ({run name: eval_problems.jsonl records}) in about two bytes a
    problem, for a suite's JSON, so that its intervals can be recomputed from the JSON alone:
    {"problem_ids": the first run's order, "runs": {name: {"r1": "10-1...", "r2": ...}}}, a character
    per problem: "1" right, "0" wrong (`is_right`), "-"
    no verdict or not evaluated in that run."""
    ids = [p["problem_id"] for p in next(iter(runs.values()))]

    def mark(record: dict | None, key: str) -> str:
        value = None if record is None else record.get(key)
        return _MARK[None if value is None else is_right(value)]

    out = {}
    for name, records in runs.items():
        by_id = {p["problem_id"]: p for p in records}
        out[name] = {key: "".join(mark(by_id.get(i), key) for i in ids) for key in ("r1", "r2")}
    return {"problem_ids": ids, "runs": out}


def decode_outcomes(encoded: dict) -> dict[str, list[dict]]:
    """encode_outcomes's inverse, as records outcome_arrays takes (r 1.0, 0.0 or None)."""
    value = {"1": 1.0, "0": 0.0, "-": None}
    return {name: [{"problem_id": i, "r1": value[a], "r2": value[b]}
                   for i, a, b in zip(encoded["problem_ids"], run["r1"], run["r2"])]
            for name, run in encoded["runs"].items()}
