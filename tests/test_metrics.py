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
