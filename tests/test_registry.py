"""The run registry against a real redis-server: what a run writes, Redis lost and back mid-run, the
heartbeat that tells a dead run from a running one, resumed attempts, the embedded server's
lifecycle, `python -m learner.runs`, and a configured Redis that does not answer."""
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
from learner.runs import details, table
from learner.tracking.registry import INDEX, RunEntry, RunRegistry, alive_key, connect, get_run, list_runs, run_key
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


def heartbeats():
    """The names of the heartbeat threads running now."""
    return {t.name for t in threading.enumerate() if t.name.startswith("registry-heartbeat-")}


@pytest.fixture(autouse=True)
def no_heartbeat_outlives_its_test():
    before = heartbeats()  # one leaked by a failed test is blamed on that test only
    yield
    assert not heartbeats() - before, "a RunEntry's heartbeat thread was left running"


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


def test_a_run_whose_process_died_reads_as_lost_once_its_alive_key_expires(redis_process, tmp_path):
    client = connect(redis_process.url)
    entry = RunEntry(client, redis_process.url, "dead", load_config(), tmp_path, print,
                     heartbeat_s=0.2, alive_ttl_s=1.0)
    entry.record(train(1))
    time.sleep(1.5)  # past the TTL: only the heartbeat keeps the key
    assert get_run(client, "dead")["status"] == "running"
    assert 0 < client.pttl(alive_key("dead")) <= 1000

    entry.close()  # the heartbeat stops and nothing is written, as when the process is killed
    died = time.monotonic()
    assert "registry-heartbeat-dead" not in heartbeats(), "close() returns once the heartbeat thread has ended"
    run = get_run(client, "dead")
    assert run["status"] == "running", "lost only once the TTL has run out"
    while run["status"] == "running":
        assert time.monotonic() - died < 3.0, "still running well past the TTL"
        time.sleep(0.05)
        run = get_run(client, "dead")
    assert run["status"] == "lost" and run["step"] == 1 and run["updated"]  # when it was last seen
    (listed,) = list_runs(client)
    assert listed["status"] == "lost"
    assert table([listed]).splitlines()[1].split()[1] == "lost" and "lost: its process stopped" in table([listed])
    assert "status          lost (its process stopped" in details(run)


def test_finish_and_fail_stop_the_heartbeat_and_delete_the_alive_key(redis_process, tmp_path):
    client = connect(redis_process.url)
    done = RunEntry(client, redis_process.url, "done", load_config(), tmp_path, print, heartbeat_s=0.1)
    broken = RunEntry(client, redis_process.url, "broken", load_config(), tmp_path, print, heartbeat_s=0.1)
    assert client.exists(alive_key("done"), alive_key("broken")) == 2
    assert done.finish("ckpt") and broken.fail("RuntimeError: boom")
    assert not {"registry-heartbeat-done", "registry-heartbeat-broken"} & heartbeats()
    time.sleep(0.3)  # a heartbeat still running would put a key back
    assert client.exists(alive_key("done"), alive_key("broken")) == 0
    assert {r["run_id"]: r["status"] for r in list_runs(client)} == {"done": "finished", "broken": "failed"}


def test_a_resumed_run_keeps_its_start_and_counts_attempts(redis_process, tmp_path):
    client = connect(redis_process.url)
    cfg = load_config(None, [f"cluster.redis_url={redis_process.url}"])
    registry = RunRegistry(cfg)
    first = registry.open_run("r", cfg, tmp_path, print)
    first.record(train(3))
    first.fail("RuntimeError: node lost")
    client.hset(run_key("r"), "started", "2026-01-01 00:00:00")  # a start unlike any this test could write
    score = client.zscore(INDEX, "r")
    assert get_run(client, "r")["attempt"] == 1 and "resumed" not in get_run(client, "r")

    second = registry.open_run("r", cfg, tmp_path, print, attempt=2, base={"base_model": "/m", "base_sha256": "ab" * 32})
    run = get_run(client, "r")
    assert (run["status"], run["attempt"], run["error"]) == ("running", 2, "")
    assert (run["base_model"], run["base_sha256"]) == ("/m", "ab" * 32)  # which base it trains, in the list too
    assert table([run]).splitlines()[0].split()[-2] == "base" and table([run]).splitlines()[1].split()[-3] == "ab" * 6
    assert run["started"] == "2026-01-01 00:00:00" and run["resumed"] and client.zscore(INDEX, "r") == score
    assert [r["run_id"] for r in list_runs(client)] == ["r"]
    assert table([run]).splitlines()[1].split()[:3] == ["r", "running", "2"]
    second.finish("ckpt")
    assert (get_run(client, "r")["status"], get_run(client, "r")["attempt"]) == ("finished", 2)
    registry.close()


def test_hashes_written_before_heartbeats_and_attempts_still_read(redis_process):
    client = connect(redis_process.url)
    for run_id, status in (("old-done", "finished"), ("old-running", "running")):
        client.hset(run_key(run_id), mapping={"run_id": run_id, "status": status, "step": "4", "updated": "then"})
        client.zadd(INDEX, {run_id: 1.0})
    runs = {r["run_id"]: r for r in list_runs(client)}
    assert {k: (r["status"], r["attempt"]) for k, r in runs.items()} == {
        "old-done": ("finished", 1), "old-running": ("lost", 1)}


def test_the_heartbeat_rides_out_a_redis_outage_without_raising(redis_process, tmp_path):
    logs = []
    entry = RunEntry(connect(redis_process.url), redis_process.url, "outage", load_config(), tmp_path, logs.append,
                     heartbeat_s=0.1, alive_ttl_s=1.0)
    redis_process.kill()
    time.sleep(0.6)  # several beats fail, each backing the state writes off further
    started = time.monotonic()
    entry.record(train(1))
    assert time.monotonic() - started < 0.5, "the heartbeat's failures must not stall training"
    assert "registry-heartbeat-outage" in heartbeats(), "the heartbeat goes on"
    assert sum("failed" in line for line in logs) == 1, logs

    redis_process.start()  # back, and empty
    client = connect(redis_process.url)
    deadline = time.monotonic() + 20.0
    while not client.exists(alive_key("outage")):
        assert time.monotonic() < deadline, "the heartbeat did not come back with Redis"
        time.sleep(0.05)
    entry.record(train(2))  # written at once, not after the back-off the failed beats built up
    assert (get_run(client, "outage")["status"], get_run(client, "outage")["step"]) == ("running", 2)
    assert any("answers again" in line for line in logs)
    assert entry.finish("ckpt") and get_run(client, "outage")["status"] == "finished"


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
    assert header.split()[:6] == ["run", "status", "attempt", "stage", "step", "version"]
    assert row.split()[:9] == ["demo-20260101-000000", "finished", "1", "1", "1", "1", "57.8", "48.4", "-9.4"]
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
    entry = RunEntry(connect(redis_process.url), redis_process.url, "remote-1", load_config(), tmp_path, print)
    listed = subprocess.run([sys.executable, "-m", "learner.runs", "--redis-url", redis_process.url],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    entry.close()
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
