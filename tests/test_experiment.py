"""`python -m learner.experiment --quick`: every method of the suite runs and the table and plots are written."""
import json
import subprocess
import sys

import pytest

from e2e import ROOT

METHODS = {"base", "single_turn", "no_stage1", "no_shaping", "score", "pair_sft"}
METRICS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i", "same_answer")


@pytest.mark.slow
def test_quick_suite_runs_every_method_and_writes_the_table(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "learner.experiment", "--quick", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
         "--set", f"model.cache_dir={tmp_path / 'models'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "quick.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == METHODS
    for r in rows.values():
        assert r["seeds"] == [0, 1]
        for key in METRICS:
            assert set(r[key]) == {"mean", "std"} and 0 <= abs(r[key]["mean"]) <= 100
        # the five metrics are consistent: Δ = Acc@t2 - Acc@t1 = Δi→c - Δc→i, seed by seed
        for a1, a2, d, i2c, c2i in zip(*(r["per_seed"][k] for k in METRICS[:5])):
            assert d == pytest.approx(a2 - a1, abs=0.02) and d == pytest.approx(i2c - c2i, abs=0.02)
    assert rows["base"]["steps"] == 0 and rows["base"]["delta"]["std"] == 0  # greedy: same every seed
    # every trained method gets the same number of steps (the same sampled-token budget in expectation)
    assert {rows[m]["steps"] for m in METHODS - {"base"}} == {4}
    assert rows["no_stage1"]["stage1_steps"] == 0 and rows["no_stage1"]["stage2_steps"] == 4
    table = (out / "quick.md").read_text()
    table_rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert "SCoRe" in table and "Δ(t1,t2)" in table and len(table_rows) == len(METHODS) + 1  # header + methods
    for png in ("quick_training_curves.png", "quick_deltas.png"):
        assert (out / png).stat().st_size > 5000
    # each run's held-out evaluations and training records are kept
    evals = result["curves"]["score-s0"]["evals"]
    assert [e["step"] for e in evals] == [0, 2, 4]
