"""The suite's bootstrap intervals and paired comparisons, on constructed data with a known answer."""
import numpy as np
import pytest

from learner.statistics import bootstrap_ci, paired_difference


def _runs(p1: float, p2: float, seeds: int = 3, problems: int = 400, seed: int = 0):
    """Boolean [seeds, problems] attempt-1 and attempt-2 outcomes with the given rates."""
    rng = np.random.default_rng(seed)
    return rng.random((seeds, problems)) < p1, rng.random((seeds, problems)) < p2


def test_interval_covers_the_point_value_and_narrows_with_more_problems():
    c1, c2 = _runs(0.5, 0.6)
    ci = bootstrap_ci(c1, c2, n_boot=500)
    for k, v in ci.items():
        assert v["lo"] <= v["value"] <= v["hi"], k
    assert ci["acc_t1"]["value"] == pytest.approx(100 * c1.mean())
    assert ci["delta"]["value"] == pytest.approx(100 * (c2.mean() - c1.mean()))
    # one seed: the binomial interval, half-width 1.96·sqrt(p(1-p)/n) = 3.1 points for 1000 problems at p=0.5
    one = bootstrap_ci(*_runs(0.5, 0.6, seeds=1, problems=1000), n_boot=1000)
    assert 2.7 < (one["acc_t1"]["hi"] - one["acc_t1"]["lo"]) / 2 < 3.5
    half = (ci["acc_t1"]["hi"] - ci["acc_t1"]["lo"]) / 2
    wide = bootstrap_ci(*_runs(0.5, 0.6, problems=50), n_boot=500)
    assert wide["acc_t1"]["hi"] - wide["acc_t1"]["lo"] > 2 * half  # fewer problems, wider


def test_interval_includes_the_spread_between_seeds():
    """Seeds that disagree widen the interval: the bootstrap resamples seeds, not only problems."""
    agree = np.stack([np.arange(200) % 2 == 0] * 4)  # every seed 50% right on the same problems
    disagree = np.stack([np.arange(200) < n for n in (40, 160, 40, 160)])  # seeds at 20% and 80%, mean 50%
    c2 = np.zeros_like(agree)
    a, d = bootstrap_ci(agree, c2, n_boot=500), bootstrap_ci(disagree, c2, n_boot=500)
    assert a["acc_t1"]["value"] == d["acc_t1"]["value"] == 50.0
    assert d["acc_t1"]["hi"] - d["acc_t1"]["lo"] > 2 * (a["acc_t1"]["hi"] - a["acc_t1"]["lo"])


def test_identical_methods_differ_by_zero_and_a_shifted_one_does_not():
    c1, c2 = _runs(0.5, 0.55)
    same = paired_difference((c1, c2), (c1.copy(), c2.copy()), n_boot=500)
    assert same["delta"] == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p_not_greater": 1.0}
    # two independent draws of the same method: the CI contains 0
    other = paired_difference((c1, c2), _runs(0.5, 0.55, seed=1), n_boot=1000)
    for k in ("delta", "acc_t2"):
        assert other[k]["lo"] < 0 < other[k]["hi"], (k, other[k])
    # the same method with 10% more of its wrong attempt-2 answers fixed: the CI excludes 0
    rng = np.random.default_rng(5)
    better2 = c2 | ((~c2) & (rng.random(c2.shape) < 0.1))
    shifted = paired_difference((c1, better2), (c1, c2), n_boot=1000)
    for k in ("delta", "acc_t2"):
        assert shifted[k]["diff"] > 0 and shifted[k]["lo"] > 0, (k, shifted[k])
        assert shifted[k]["p_not_greater"] < 0.025


def test_paired_comparison_needs_the_same_runs():
    c1, c2 = _runs(0.5, 0.5)
    with pytest.raises(ValueError, match="same seeds and problems"):
        paired_difference((c1, c2), (c1[:, :10], c2[:, :10]))
    with pytest.raises(ValueError):
        bootstrap_ci(c1[0], c2[0])


def test_outcome_arrays_align_runs_by_problem_and_leave_ungraded_problems_out():
    from learner.statistics import outcome_arrays

    run = lambda rows: [{"problem_id": i, "r1": a, "r2": b} for i, a, b in rows]  # noqa: E731
    arrays = outcome_arrays({
        "a": [run([("p", 0.0, 1.0), ("q", 1.0, 1.0), ("r", 0.0, 0.0)])],
        "b": [run([("r", 1.0, None), ("q", 0.0, 1.0), ("p", 1.0, 0.0)])],  # another order; r has no verdict
    })
    assert arrays["a"][0].tolist() == [[False, True]] and arrays["a"][1].tolist() == [[True, True]]
    assert arrays["b"][0].tolist() == [[True, False]] and arrays["b"][1].tolist() == [[False, True]]


def test_outcomes_written_compactly_give_back_the_same_arrays():
    from learner.statistics import decode_outcomes, encode_outcomes, outcome_arrays

    run = lambda rows: [{"problem_id": i, "r1": a, "r2": b} for i, a, b in rows]  # noqa: E731
    runs = {"a-s0": run([("p", 0.0, 1.0), ("q", 1.0, 1.0), ("r", 0.0, 0.0)]),
            "b-s0": run([("r", 1.0, None), ("q", 0.0, 1.0)])}  # another order; r has no verdict; p not evaluated
    encoded = encode_outcomes(runs)
    assert encoded == {"problem_ids": ["p", "q", "r"],
                       "runs": {"a-s0": {"r1": "010", "r2": "110"}, "b-s0": {"r1": "-01", "r2": "-1-"}}}
    decoded = decode_outcomes(encoded)
    as_methods = lambda rs: {name: [records] for name, records in rs.items()}  # noqa: E731
    for name, (c1, c2) in outcome_arrays(as_methods(decoded)).items():
        want = outcome_arrays(as_methods(runs))[name]
        assert c1.tolist() == want[0].tolist() and c2.tolist() == want[1].tolist()
