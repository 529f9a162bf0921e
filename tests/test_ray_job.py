"""The cluster path for real: `ray start --head`, then `ray job submit -- python -m learner.main`.

Uses the commands the README shows, with token authentication on (Ray 2.60's default), the head
bound to loopback and every port chosen free so it cannot collide with another Ray on the machine.
"""
import json
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from e2e import ROOT, quick_overrides

BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _session_pids(temp_dir: Path) -> list[int]:
    """Every process of this head (found by its private temp dir), so we stop ours and only ours."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(temp_dir).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def head_node():
    gcs, dashboard, agent, agent_grpc, metrics, runtime_env, client = _free_ports(7)
    temp_dir = Path(tempfile.mkdtemp(prefix="rayjob-", dir="/tmp"))  # short: unix socket paths max ~107 bytes
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    started = subprocess.run(
        [
            str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}", f"--ray-client-server-port={client}",
            "--num-cpus=4", "--disable-usage-stats", f"--temp-dir={temp_dir}",
        ],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        for pid in _session_pids(temp_dir):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(2)
        for pid in _session_pids(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


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
    (run,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["metrics"]) == {"base", "SCoRe"}
