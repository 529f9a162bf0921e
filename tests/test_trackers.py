"""Experiment trackers: a short real run (in-process, tiny model) logs to TensorBoard, W&B (offline)
and MLflow (local SQLite store) at once, and each is read back through its own reader and compared,
key by key and step by step, with the run's metrics.jsonl. A tracker whose package is not installed
is skipped, saying so; `make setup` installs them all (the dev extra includes the trackers extra)."""
import importlib.util
import json
import struct
from pathlib import Path

import pytest

from graders.registry import make_task
from learner.driver.local_backend import LocalBackend
from learner.driver.loop import TrainLoop
from learner.driver.metrics import format_table
from learner.tracking import loggers
from learner.tracking.loggers.base import LOGGERS, Logger, LoggerUnavailable, scalars
from learner.tracking.run_dir import RunDir
from protos.config import TrackingConfig
from test_pipeline import config

INSTALLED = [name for name in ("tensorboard", "wandb", "mlflow") if importlib.util.find_spec(LOGGERS[name].package)]


def needs(name: str):
    return pytest.mark.skipif(name not in INSTALLED, reason=f"{name} is not installed (pip install -e '.[trackers]')")


def tracked_run(cfg, model_dir, log=print) -> tuple[RunDir, str, dict]:
    """What learner.main does with a run's records, in-process: metrics.jsonl and the trackers get each one."""
    run_dir = RunDir.create(cfg, {"base_model": str(model_dir), "base_sha256": "test"})
    trackers = loggers.Trackers.open(cfg, run_dir.path, log)

    def on_record(record):
        run_dir.log_metrics(record)
        trackers.log(record)

    backend = LocalBackend(cfg, model_dir)
    loop = TrainLoop(cfg, make_task(cfg.task.name, cfg.task.params), backend, on_record, log)
    try:
        rows = {"base": loop.evaluate(step=0)}
        loop.train()
        rows["SCoRe"] = loop.evaluate(step=loop.total_steps)
    finally:
        backend.close()
    table = format_table(rows)
    trackers.finish(table, rows)
    return run_dir, table, rows


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    if not INSTALLED:
        pytest.skip("no tracker installed (pip install -e '.[trackers]')")
    out = tmp_path_factory.mktemp("tracked")
    cfg = config(f"output_dir={out}", "eval.every_steps=2", f"tracking.loggers=[{', '.join(INSTALLED)}]")
    return tracked_run(cfg, tiny_model_dir)


def expected(run_dir: RunDir) -> dict[str, dict[int, float]]:
    """metrics.jsonl as tracker series: metric -> {step: value}."""
    series: dict[str, dict[int, float]] = {}
    for record in run_dir.records():
        for key, value in scalars(record).items():
            series.setdefault(key, {})[record["step"]] = value
    return series


def test_the_registry_offers_what_the_config_accepts():
    assert sorted(LOGGERS) == sorted(TrackingConfig.model_fields["loggers"].annotation.__args__[0].__args__)


@needs("tensorboard")
def test_tensorboard_event_files_hold_every_record(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, table, _ = run
    events = EventAccumulator(str(run_dir.path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    want = expected(run_dir)
    assert sorted(events.Tags()["scalars"]) == sorted(want)
    assert {"eval/acc_t1", "eval/acc_t2", "train/reward_t1", "train/kl_t2"} <= set(want)
    for key, by_step in want.items():
        got = {e.step: e.value for e in events.Scalars(key)}
        assert got == pytest.approx(by_step, rel=1e-6, abs=1e-6), key  # TensorBoard keeps float32
    texts = {tag: events.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}
    assert "Acc@t1" in texts["eval/table/text_summary"] and "SCoRe" in texts["eval/table/text_summary"]
    assert "max_policy_lag: 1" in texts["config/text_summary"]


@needs("mlflow")
def test_mlflow_store_holds_every_record_and_the_config(run):
    import mlflow

    run_dir, table, _ = run
    client = mlflow.MlflowClient(f"sqlite:///{run_dir.path.resolve() / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("score-rl").experiment_id])
    assert found.info.run_name == run_dir.path.name and found.info.status == "FINISHED"
    want = expected(run_dir)
    assert sorted(found.data.metrics) == sorted(want)
    for key, by_step in want.items():
        assert {m.step: m.value for m in client.get_metric_history(found.info.run_id, key)} == by_step, key
    assert found.data.params["score.stage1_steps"] == "3" and found.data.params["task.name"] == "sort_by_length"
    assert Path(client.download_artifacts(found.info.run_id, "eval_table.txt")).read_text() == table + "\n"
    assert found.info.artifact_uri.startswith(run_dir.path.resolve().as_uri())  # artifacts stay in the run directory


def wandb_records(path: Path):
    """The records of a W&B run file (.wandb): a LevelDB-style log (7-byte file header, 32 KiB blocks of
    chunks each with a 7-byte header: checksum, length, type full/first/middle/last), each record a
    wandb_internal_pb2.Record protobuf, as `wandb sync` reads it."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # too little room left in the block for a chunk header: padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full or last chunk: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


@needs("wandb")
def test_wandb_offline_run_holds_every_record_and_the_config(run):
    run_dir, _, rows = run
    (run_file,) = (run_dir.path / "wandb").glob("offline-run-*/run-*.wandb")
    history: dict[str, dict[int, float]] = {}
    config, summary = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for key, value in items.items():
                if not key.startswith("_"):
                    history.setdefault(key, {})[items["_step"]] = value
        elif kind in ("run", "config"):  # the config comes with the run record, later changes as config records
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({item.key: json.loads(item.value_json) for item in updates})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
        if kind == "run":
            assert record.run.display_name == run_dir.path.name
    assert history == expected(run_dir)
    assert config["score"]["stage1_steps"] == 3 and config["cluster"]["max_policy_lag"] == 1
    assert summary["final/SCoRe/acc_t2"] == rows["SCoRe"]["acc_t2"]


class BrokenAtStep2(Logger):
    """Fails at step 2, as a tracker whose server went away would (not registered: no config names it)."""

    name = "broken-in-test"

    def __init__(self, cfg, run_dir, run_id):
        self.steps = []

    def log(self, record):
        if record["step"] == 2:
            raise ConnectionError("the tracking server went away")
        self.steps.append(record["step"])

    def finish(self, table, rows):
        pass

    def close(self):
        pass


def test_a_tracker_failing_mid_run_is_named_and_dropped_and_the_others_go_on(tmp_path):
    lines = []
    trackers = loggers.Trackers([BrokenAtStep2(config(), tmp_path, "r")], lines.append)
    broken = trackers.loggers[0]
    for step in (1, 2, 3):
        trackers.log({"kind": "train", "step": step, "reward_t1": 0.5})
    assert broken.steps == [1] and trackers.loggers == []
    assert lines == ["tracker broken-in-test failed (logging step 2: ConnectionError: the tracking server went away); "
                     "training goes on without it (metrics.jsonl has every record)"]


def test_a_missing_tracker_package_is_an_error_naming_the_key_and_the_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if not installed: importing it fails
    cfg = config("tracking.loggers=[wandb]")
    with pytest.raises(LoggerUnavailable, match=r"tracking.loggers lists wandb.*pip install -e '.\[trackers\]'"):
        loggers.check(cfg)
