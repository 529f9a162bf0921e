"""The cluster path for real: `ray start --head`, then `ray job submit -- python -m learner.main`.

Uses the commands the README shows, with token authentication on (Ray 2.60's default), the head
bound to loopback and every port chosen free so it cannot collide with another Ray on the machine.
"""
import json
import subprocess

import pytest

from e2e import ROOT, quick_overrides
from ray_head import BIN, ray_head


@pytest.fixture
def head_node():
    with ray_head() as head:
        yield head.env, head.dashboard


@pytest.mark.slow
def test_ray_job_submit_runs_both_stages_on_the_head_node(head_node, tmp_path):
    env, dashboard = head_node
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", ".", "--",
         "python", "-m", "learner.main", *quick_overrides(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "succeeded" in out and "stage 2 step 2/2" in out
    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "summary.json").exists()]  # not .redis/
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["metrics"]) == {"base", "SCoRe"}
