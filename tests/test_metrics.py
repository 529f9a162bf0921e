import numpy as np
import pytest

from learner.driver.metrics import self_correction_metrics


def test_five_metrics_on_a_known_set():
    # 10 problems: 4 right->right, 1 wrong->right, 2 right->wrong, 3 wrong->wrong
    r1 = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 0])
    r2 = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    m = self_correction_metrics(r1, r2)
    assert m == pytest.approx({"acc_t1": 60.0, "acc_t2": 50.0, "delta": -10.0, "delta_i2c": 10.0, "delta_c2i": 20.0})
    assert m["delta"] == pytest.approx(m["delta_i2c"] - m["delta_c2i"])


def test_metrics_reject_mismatched_or_empty_input():
    with pytest.raises(ValueError):
        self_correction_metrics(np.array([1, 0]), np.array([1]))
    with pytest.raises(ValueError):
        self_correction_metrics(np.array([]), np.array([]))


def test_traces_without_a_verdict_are_counted_not_scored():
    from learner.driver.metrics import trace_metrics
    from protos import Grade, TraceMeta

    right, wrong = Grade(reward=1.0, status="pass"), Grade(reward=0.0, status="fail")
    lost = Grade(reward=0.0, status="error", detail="ungraded: grader actor 0 died")
    trace = lambda g1, g2: TraceMeta(problem_id="p", group=0, attempt1="a", attempt2="b", grade1=g1, grade2=g2)  # noqa: E731
    m = trace_metrics([trace(wrong, right), trace(right, right), trace(right, lost), trace(lost, lost)])
    assert m["ungraded"] == 2
    assert (m["acc_t1"], m["acc_t2"], m["delta_i2c"]) == (50.0, 100.0, 50.0)  # over the two graded traces
    assert np.isnan(trace_metrics([trace(lost, right)])["acc_t1"])


def test_flagged_attempts_are_counted_by_status():
    from learner.driver.metrics import trace_metrics
    from protos import Grade, TraceMeta

    right, wrong = Grade(reward=1.0, status="pass"), Grade(reward=0.0, status="fail")
    slow, blocked = Grade(reward=0.0, status="timeout"), Grade(reward=0.0, status="sandbox_violation")
    trace = lambda g1, g2: TraceMeta(problem_id="p", group=0, attempt1="a", attempt2="b", grade1=g1, grade2=g2)  # noqa: E731
    m = trace_metrics([trace(slow, blocked), trace(blocked, right), trace(wrong, right)])
    assert (m["flagged_timeout"], m["flagged_sandbox_violation"], m["flagged_error"]) == (1, 2, 0)
    assert m["acc_t2"] == pytest.approx(200 / 3)  # flagged attempts are wrong answers, not left out
