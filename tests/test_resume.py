"""Checkpoints and resume: a run stopped after step k and resumed takes the same steps as one that
was not stopped (in-process, deterministic); a corrupt checkpoint is detected and skipped."""
import json
import shutil

import pytest

from graders.registry import make_task
from learner.driver import checkpoint
from learner.driver.local_backend import LocalBackend
from learner.driver.loop import Stopped, TrainLoop
from test_pipeline import config

# timings differ between any two runs; everything else in a record must not
TIMINGS = ("step_s", "rollout_s", "grading_s", "learner_s", "sync_s", "reference_s", "rollout_tokens_per_s",
           "learner_tokens_per_s")


def checkpointed_run(cfg, model_dir, root, resume_from=None, stop_after=None) -> list[dict]:
    """The loop with checkpoints saved under `root`, optionally resumed from one, optionally asked
    to stop (as SIGTERM does) once step `stop_after` is done."""
    records = []

    def on_record(record):
        records.append(record)
        if record["step"] == stop_after:
            loop.stop_requested = "a test"

    def on_checkpoint(step):
        checkpoint.save(root, step, {**loop.state_dict(), "records_written": len(records)}, backend.save_state,
                        cfg.checkpoint.keep_last)

    backend = LocalBackend(cfg, model_dir)
    loop = TrainLoop(cfg, make_task(cfg.task.name, cfg.task.params), backend, on_record, lambda _: None, on_checkpoint)
    try:
        if resume_from is not None:
            backend.load_state(str(resume_from.learner_dir))
            loop.load_state_dict(resume_from.loop_state())
        loop.train()
    except Stopped:
        pass
    finally:
        backend.close()
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


def stopped_and_resumed(cfg, model_dir, tmp_path) -> tuple[list[dict], list[dict], list[dict]]:
    """An uninterrupted run's records, and those of the same run stopped after step 3 then resumed."""
    whole = checkpointed_run(cfg, model_dir, tmp_path / "whole")
    assert [r["step"] for r in whole] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == ["step_000002", "step_000004", "step_000006"]
    first = checkpointed_run(cfg, model_dir, tmp_path / "stopped", stop_after=3)
    assert [r["step"] for r in first] == [1, 2, 3]  # a stop request checkpoints the step it stops after
    point = checkpoint.latest(tmp_path / "stopped", print)
    assert point.step == 3 and point.loop_state()["records_written"] == 3
    return whole, first, checkpointed_run(cfg, model_dir, tmp_path / "stopped", resume_from=point)


def test_stopped_and_resumed_equals_uninterrupted(tiny_model_dir, tmp_path):
    cfg = config("cluster.max_policy_lag=0", "checkpoint.every_steps=2", "checkpoint.keep_last=5")
    whole, first, rest = stopped_and_resumed(cfg, tiny_model_dir, tmp_path)
    assert first + rest == whole  # every key of every step, exactly (the learner state restores bit for bit)


def test_with_lag_a_resumed_run_samples_its_in_flight_requests_again(tiny_model_dir, tmp_path):
    """With lag 1, step 4 was sampled by v2 before the stop; after it, by the checkpoint's v3."""
    cfg = config("cluster.max_policy_lag=1", "checkpoint.every_steps=2", "checkpoint.keep_last=5")
    whole, first, rest = stopped_and_resumed(cfg, tiny_model_dir, tmp_path)
    assert first == whole[:3] and [r["step"] for r in rest] == [4, 5, 6]
    assert (whole[3]["sampled_policy_version"], rest[0]["sampled_policy_version"]) == (2, 3)
    assert rest[0]["traces_trained"] == whole[3]["traces_trained"]
    assert rest[-1]["batches_requested_total"] == whole[-1]["batches_requested_total"]  # none counted twice


def test_a_corrupt_checkpoint_is_named_and_the_previous_good_one_used(tiny_model_dir, tmp_path):
    cfg = config("checkpoint.every_steps=1", "checkpoint.keep_last=3", "score.stage1_steps=1", "score.stage2_steps=2")
    checkpointed_run(cfg, tiny_model_dir, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000001", "step_000002", "step_000003"]  # pruned to 3
    logged = []
    assert checkpoint.latest(tmp_path, logged.append).step == 3 and logged == []

    shard = next((tmp_path / "step_000003" / "learner").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern, same size
    shard.write_bytes(bytes(data))
    (tmp_path / "step_000002" / "loop.json").write_text("{}")  # a changed file
    assert checkpoint.latest(tmp_path, logged.append).step == 1
    assert f"{shard} does not match its SHA-256" in logged[0] and "step_000002/loop.json" in logged[1]
    assert "previous good checkpoint, step_000001" in logged[2]

    (tmp_path / "step_000001" / "learner" / ".metadata").write_bytes(b"")  # truncated
    with pytest.raises(checkpoint.CheckpointError, match="metadata has 0 bytes"):
        checkpoint.latest(tmp_path, logged.append)
    shutil.rmtree(tmp_path / "step_000001" / "learner")
    assert "is missing" in checkpoint.problem(tmp_path / "step_000001")


def test_a_crash_mid_save_leaves_no_checkpoint(tmp_path):
    def dies(path):
        (checkpoint.Path(path) / "half").parent.mkdir(parents=True)
        raise OSError("disk gone")

    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 7, {"version": 7}, dies, keep_last=2)
    assert checkpoint.latest(tmp_path, print) is None  # only the hidden staging directory exists
    checkpoint.save(tmp_path, 7, {"version": 7}, lambda path: checkpoint.Path(path).mkdir(), keep_last=2)
    assert json.loads((tmp_path / "step_000007" / "loop.json").read_text()) == {"version": 7}
