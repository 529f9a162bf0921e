"""The run registry against a real redis-server: what a run writes, Redis lost and back mid-run, the
embedded server's lifecycle, `python -m learner.runs`, and a configured Redis that does not answer."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from e2e import ROOT, run_cli
from learner.tracking.redis_server import EmbeddedRedis
from learner.tracking.registry import RunEntry, RunRegistry, connect, get_run, list_runs
from protos import load_config
from common.ports import free_ports


class RedisProcess:
    """A redis-server on a fixed port, without persistence: killed, it comes back empty."""

    def __init__(self, tmp_path):
        (self.port,) = free_ports(1)
        self.dir = tmp_path
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def redis_process(tmp_path):
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.kill()


def train(step, stage=1):
    return {"kind": "train", "stage": stage, "step": step, "policy_version": step, "reward_t1": 0.25,
            "reward_t2": 0.5, "kl_t1": 0.0, "kl_t2": 0.1, "step_s": 1.0, "rollout_s": 0.5}


def test_a_run_writes_config_status_progress_and_metrics(redis_process, tmp_path):
    cfg = load_config(None, ["name=demo"])
    client = connect(redis_process.url)
    entry = RunEntry(client, redis_process.url, "demo-1", cfg, tmp_path, print)
    assert get_run(client, "demo-1")["status"] == "running"
    entry.record({"kind": "eval", "step": 0, "policy_version": 0, "acc_t1": 50.0, "acc_t2": 40.0, "delta": -10.0})
    entry.record(train(1))
    entry.record(train(2, stage=2))
    assert entry.finish("/ckpt/demo-1")

    run = get_run(client, "demo-1")
    assert (run["status"], run["stage"], run["step"], run["policy_version"]) == ("finished", "2", 2, 2)
    assert run["checkpoint"] == "/ckpt/demo-1" and run["run_dir"] == str(tmp_path.resolve())
    assert "name: demo" in run["config"] and len(run["config_hash"]) == 16
    assert run["metrics"]["eval"] == {"acc_t1": 50.0, "acc_t2": 40.0, "delta": -10.0}
    assert run["metrics"]["train"]["reward_t2"] == 0.5 and "rollout_s" not in run["metrics"]["train"]
    assert [r["run_id"] for r in list_runs(client)] == ["demo-1"]


def test_redis_killed_and_restarted_mid_run_loses_no_step(redis_process, tmp_path):
    logs = []
    entry = RunEntry(connect(redis_process.url), redis_process.url, "r", load_config(), tmp_path, logs.append,
                     max_backoff_s=0.2)
    entry.record(train(1))
    redis_process.kill()
    started = time.monotonic()
    for step in range(2, 6):  # training goes on while Redis is gone
        entry.record(train(step))
    assert time.monotonic() - started < 2.0, "a lost Redis must not stall training"
    assert any("failed" in line and redis_process.url in line for line in logs)

    redis_process.start()  # back, and empty: it kept nothing
    for step in range(6, 9):
        entry.record(train(step))
        time.sleep(0.25)  # past the back-off: the next change is written
    client = connect(redis_process.url)
    run = get_run(client, "r")
    assert (run["step"], run["policy_version"], run["status"]) == (8, 8, "running")
    assert "name: score" in run["config"], "the whole state is written again, not only what changed"
    assert any("answers again" in line for line in logs)
    assert entry.finish("ckpt") and get_run(client, "r")["status"] == "finished"


def test_the_final_state_waits_for_redis_and_then_gives_up_naming_the_run_dir(redis_process, tmp_path):
    logs = []
    entry = RunEntry(connect(redis_process.url), redis_process.url, "r", load_config(), tmp_path, logs.append)
    redis_process.kill()
    threading.Timer(1.0, redis_process.start).start()
    assert entry.fail("RuntimeError: boom\ntraceback ...", wait_s=20)
    run = get_run(connect(redis_process.url), "r")
    assert (run["status"], run["error"]) == ("failed", "RuntimeError: boom")

    redis_process.kill()
    assert not entry.finish("ckpt", wait_s=1.0)
    assert str(tmp_path.resolve()) in logs[-1] and "has everything" in logs[-1]


def test_embedded_server_is_shared_stopped_by_its_last_user_and_keeps_its_data(tmp_path):
    data = tmp_path / ".redis"
    first, second = EmbeddedRedis(data), EmbeddedRedis(data)
    url = first.start()
    assert second.start() == url, "a second user joins the running server"
    connect(url).set("kept", "yes")
    pid = json.loads((data / "server.json").read_text())["pid"]
    first.stop()
    assert connect(url).get("kept") == "yes", "still in use by the second"
    second.stop()
    assert not os.path.exists(f"/proc/{pid}") or b"redis-server" not in open(f"/proc/{pid}/cmdline", "rb").read()
    with EmbeddedRedis(data) as again:  # started anew on the saved data
        assert connect(again.url).get("kept") == "yes"


def test_learner_runs_lists_and_shows_the_embedded_registry(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}/runs", "name=demo"])
    registry = RunRegistry(cfg)
    entry = registry.open_run("demo-20260101-000000", cfg, tmp_path / "runs" / "demo-20260101-000000", print)
    entry.record({"kind": "eval", "step": 0, "policy_version": 0, "acc_t1": 57.8, "acc_t2": 48.4, "delta": -9.4})
    entry.record(train(1))
    entry.finish("/x/checkpoint")
    registry.close()

    def runs(*args):
        return subprocess.run([sys.executable, "-m", "learner.runs", "--output-dir", f"{tmp_path}/runs", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    listed = runs("list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:5] == ["run", "status", "stage", "step", "version"]
    assert row.split()[:8] == ["demo-20260101-000000", "finished", "1", "1", "1", "57.8", "48.4", "-9.4"]
    shown = runs("show", "demo-20260101-000000")
    assert shown.returncode == 0 and "checkpoint      /x/checkpoint" in shown.stdout
    assert "last train" in shown.stdout and "config:\n  name: demo" in shown.stdout
    read_end, write_end = os.pipe()
    os.close(read_end)  # a reader already gone, as `| head` is after its lines
    piped = subprocess.run([sys.executable, "-m", "learner.runs", "--output-dir", f"{tmp_path}/runs", "list"],
                           cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write_end)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    missing = runs("show", "nope")
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr
    assert not (tmp_path / "runs" / ".redis" / "server.json").exists(), "learner.runs stops the server it started"


def test_learner_runs_names_what_is_missing(tmp_path):
    no_registry = subprocess.run([sys.executable, "-m", "learner.runs", "--output-dir", str(tmp_path), "list"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert no_registry.returncode == 1 and f"no run registry in {tmp_path}/.redis" in no_registry.stderr
    down = subprocess.run([sys.executable, "-m", "learner.runs", "--redis-url", "redis://127.0.0.1:1/0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "'redis://127.0.0.1:1/0' does not answer" in down.stderr


def test_learner_runs_reads_a_configured_redis(redis_process, tmp_path):
    RunEntry(connect(redis_process.url), redis_process.url, "remote-1", load_config(), tmp_path, print)
    listed = subprocess.run([sys.executable, "-m", "learner.runs", "--redis-url", redis_process.url],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "remote-1" in listed.stdout and "running" in listed.stdout


def test_a_configured_redis_that_does_not_answer_stops_the_run_before_its_directory(tiny_model_dir, tmp_path):
    proc = run_cli(
        ["--set", f"output_dir={tmp_path}/runs", "--set", f"model.path={tiny_model_dir}",
         "--set", "cluster.redis_url=redis://127.0.0.1:1/0"],
        timeout=180,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "'redis://127.0.0.1:1/0' does not answer" in proc.stderr and "cluster.redis_url" in proc.stderr
    assert not (tmp_path / "runs").exists()


def _train_records(runs_dir) -> int:
    return sum(
        '"kind": "train"' in line
        for path in runs_dir.glob("*/metrics.jsonl") for line in path.read_text().splitlines()
    )


def _wait_for(condition, proc, log, timeout_s=600):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_run_survives_its_redis_being_killed_and_restarted(redis_process, tmp_path):
    from e2e import quick_overrides

    log = tmp_path / "run.log"  # a file, not a pipe: nobody reads a pipe while the test waits
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "learner.main", *quick_overrides(tmp_path),
             "--set", f"cluster.redis_url={redis_process.url}"],
            cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(lambda: _train_records(tmp_path / "runs") >= 1, proc, log)
        redis_process.kill()
        _wait_for(lambda: _train_records(tmp_path / "runs") >= 3, proc, log)
        redis_process.start()  # empty: it kept nothing
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "training goes on" in out and "answers again" in out
    (run,) = list_runs(connect(redis_process.url))
    assert (run["status"], run["stage"], run["step"], run["policy_version"]) == ("finished", "2", 4, 4)
    assert run["checkpoint"].endswith("/checkpoint") and set(run["metrics"]) == {"train", "eval"}
    assert _train_records(tmp_path / "runs") == 4, "every step ran and was logged"
