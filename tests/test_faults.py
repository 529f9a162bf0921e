"""Faults in a real run, processes killed by PID: SIGTERM (preemption) checkpoints and exits 3
naming the resume command; kill -9 of the driver loses only the steps since the last checkpoint,
and `--resume` continues in the same run directory with every step recorded exactly once; kill -9
of a rollout actor is recovered within the run by a new actor (no step lost), and of a learner rank
by rebuilding every actor from the last checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e import ROOT, quick_overrides, run_cli
from processes import process_ended
from ray_head import actor_pids, ray_head

pytestmark = pytest.mark.slow

STEPS = 10  # 5 + 5: long enough to be stopped mid-run twice


def train_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    return [r["step"] for r in map(json.loads, lines) if r["kind"] == "train"]


def start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "learner.main", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until(condition, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{what} did not happen within {timeout_s:g}s")
        time.sleep(0.05)


def test_sigterm_then_kill_9_then_resume_records_every_step_once(tmp_path):
    overrides = quick_overrides(tmp_path) + [
        "--set", "score.stage1_steps=5", "--set", "score.stage2_steps=5", "--set", "checkpoint.every_steps=1",
    ]
    with ray_head() as head:
        env = {**head.env, "RAY_ADDRESS": head.address}

        # 1. SIGTERM mid-run: a checkpoint at the next step boundary, exit 3, the resume command named
        proc = start(overrides, env)
        runs = tmp_path / "runs"
        run_dir = lambda: next((d for d in runs.iterdir() if (d / "config.yaml").exists()), None) if runs.exists() else None  # noqa: E731
        wait_until(lambda: run_dir() is not None and len(train_steps(run_dir())) >= 2, proc, 300, "training step 2")
        run = run_dir()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err[-3000:]
        assert f"resume with: python -m learner.main --resume {run}" in err
        stopped_at = train_steps(run)[-1]
        assert stopped_at < STEPS and "stopped by SIGTERM" in (run / "FAILED").read_text()
        assert (run / "checkpoints" / f"step_{stopped_at:06d}").is_dir()

        # 2. the resumed run killed -9 a few steps later: everything since its last checkpoint is lost
        proc = start(["--resume", str(run)], env)
        wait_until(lambda: len(train_steps(run)) >= stopped_at + 2, proc, 300, "two more steps")
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL

        # 3. resumed again: it finishes, in the same directory, every step recorded once
        done = run_cli(["--resume", str(run)], env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert train_steps(run) == list(range(1, STEPS + 1))
    evals = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert evals == [0, STEPS]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["attempts"] == 3 and set(summary["metrics"]) == {"base", "SCoRe"}
    resumes = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert [r["attempt"] for r in resumes] == [2, 3] and resumes[0]["from_step"] == stopped_at
    assert (run / "FAILED.1").exists() and not (run / "FAILED").exists()
    assert len(list((run / "checkpoints").glob("step_*"))) == 2  # checkpoint.keep_last
    assert "resuming" in done.stdout and f"from step_{resumes[1]['from_step']:06d}" in done.stdout


def test_dead_and_hung_rollout_actors_are_replaced_and_a_dead_learner_rank_rebuilt_within_the_run(tmp_path):
    overrides = quick_overrides(tmp_path) + [
        "--set", "score.stage1_steps=5", "--set", "score.stage2_steps=5", "--set", "checkpoint.every_steps=2",
        # the collective weight group (gloo here) must be formed again with each new rollout actor
        "--set", "cluster.weight_sync=collective", "--set", "cluster.weight_sync_timeout_s=30",
        "--set", "cluster.rollout_alive_timeout_s=10",
    ]
    faults = [("RolloutActor", signal.SIGKILL), ("RolloutActor", signal.SIGSTOP), ("LearnerActor", signal.SIGKILL)]
    with ray_head() as head:
        proc = start(overrides, {**head.env, "RAY_ADDRESS": head.address})
        runs = tmp_path / "runs"
        run_dir = lambda: next((d for d in runs.iterdir() if (d / "config.yaml").exists()), None) if runs.exists() else None  # noqa: E731
        recoveries = lambda: (run_dir() / "recoveries.jsonl").read_text().splitlines() if (run_dir() / "recoveries.jsonl").exists() else []  # noqa: E731
        for n, (actor, sig) in enumerate(faults, start=1):
            wait_until(lambda: run_dir() is not None and len(train_steps(run_dir())) >= 2 * n + 1, proc, 300,
                       f"training step {2 * n + 1}")
            (pid,) = actor_pids(head, actor)
            os.kill(pid, sig)
            wait_until(lambda: len(recoveries()) == n, proc, 300, f"recovery {n}")
            # the replaced process ends: a stopped (hung) one outlives ray.kill, so the recovery SIGKILLs
            # it by PID on its node before the replacement starts (learner/driver/actor_processes.py);
            # a bounded wait, as the kernel may take a moment to tear down a large process
            wait_until(lambda: process_ended(pid), proc, 60, f"the replaced {actor}'s process {pid} to end")
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:] + err[-3000:]
    run = run_dir()
    assert train_steps(run) == list(range(1, STEPS + 1))  # the lost steps were trained again, each recorded once
    died, hung, rebuilt = [json.loads(line) for line in recoveries()]
    # rollout actors, dead or hung (stopped): replaced in place, holding the current weights (the loop
    # checks every batch's version), their unanswered requests sent again; no step lost
    for event in (died, hung):
        assert event["kind"] == "rollout_actor" and event["slots"] == [0] and event["steps_lost"] == 0
    assert hung["error"].startswith("TimeoutError: rollout actor 0 is dead or hung")
    assert "Recovery 1/3: replacing rollout actor 0 with the current weights" in out
    # the learner rank: every actor rebuilt from the last checkpoint (every_steps = 2)
    assert rebuilt["kind"] == "rebuild" and rebuilt["error"].startswith("ActorDiedError")
    assert rebuilt["steps_lost"] == rebuilt["died_after_step"] - rebuilt["from_step"] <= 2
    assert "Recovery 3/3: rebuilding the actors" in out
    assert json.loads((run / "summary.json").read_text())["recoveries"] == 3
