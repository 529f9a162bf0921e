"""A throwaway Ray head node for tests, started with the README's `ray start --head` command.

Bound to loopback, every port chosen free and a private temp dir, so it cannot collide with another
Ray on the machine; stopped by the PIDs of its own processes (never `ray stop`, which stops every
Ray on the machine).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from common.ports import free_ports

BIN = Path(sys.executable).parent


def pids_with_arg(markers: list[str], suffixes: list[str] = ()) -> list[int]:
    """Processes with an argument containing one of `markers` or ending with one of `suffixes`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(m in a for a in args for m in markers) or any(a.endswith(s) for a in args for s in suffixes):
                pids.append(int(proc.name))
    return pids


def parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def actor_pids(head: "HeadNode", actor_class: str) -> list[int]:
    """PIDs of `head`'s worker processes that run an `actor_class` actor (Ray titles them
    ray::<class>). Only this head's: other Ray clusters on the machine may run the same actors."""
    ours = set(pids_with_arg([str(head.temp_dir)]))
    found = []
    for pid in pids_with_arg([f"ray::{actor_class}"]):
        ancestor = parent(pid)
        while ancestor > 1 and ancestor not in ours:
            ancestor = parent(ancestor)
        if ancestor in ours:
            found.append(pid)
    return found


def stop(pids: list[int], grace_s: float = 2.0) -> None:
    """SIGTERM these processes, then SIGKILL the ones still there after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGTERM:
            time.sleep(grace_s)


@dataclass
class HeadNode:
    env: dict[str, str]  # what a client of this head needs: PATH with the venv, RAY_AUTH_MODE
    address: str  # the GCS, for RAY_ADDRESS
    dashboard: str  # the job API, for `ray job submit --address`
    temp_dir: Path  # holds prom_metrics_service_discovery.json and session_latest/
    metrics_port: int


@contextmanager
def ray_head(num_cpus: int = 4, env: dict[str, str] | None = None, resources: dict | None = None) -> Iterator[HeadNode]:
    gcs, dashboard, agent, agent_grpc, metrics, runtime_env, client = free_ports(7)
    temp_dir = Path(tempfile.mkdtemp(prefix="rayhead-", dir="/tmp"))  # short: unix socket paths max ~107 bytes
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", **(env or {})}
    # As the README says: `ray start` with token authentication needs a token (~/.ray/auth_token),
    # which only this command (or a local ray.init()) makes; on a fresh machine there is none.
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    started = subprocess.run(
        [
            str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}", f"--ray-client-server-port={client}",
            f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources or {})}", "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=env, capture_output=True, text=True, timeout=180,
    )
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield HeadNode(env, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", temp_dir, metrics)
    finally:
        # The temp dir names most of the head's processes; the Ray client server only names the GCS.
        stop(pids_with_arg([str(temp_dir)], [f":{gcs}"]))
        shutil.rmtree(temp_dir, ignore_errors=True)


def add_worker(head: HeadNode, num_cpus: int, resources: dict) -> None:
    """Join a worker node to `head` (`ray start --address`), on this machine, with its own free ports.

    It shares the head's temp dir, so leaving `ray_head` stops it too.
    """
    node_manager, object_manager, agent, agent_grpc, metrics, runtime_env = free_ports(6)
    started = subprocess.run(
        [
            str(BIN / "ray"), "start", f"--address={head.address}", "--node-ip-address=127.0.0.1",
            f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}", "--disable-usage-stats",
            f"--temp-dir={head.temp_dir}",
        ],
        env=head.env, capture_output=True, text=True, timeout=180,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
