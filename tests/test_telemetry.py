"""The metric definitions, their documentation and the Grafana files, without Ray or Prometheus.

The metrics themselves are checked against a real Prometheus in test_prometheus.py (slow).
"""
import json
import re

import pytest
import yaml

from e2e import ROOT
from common import telemetry
from learner.driver.metrics import METRIC_NAMES
from protos import ConfigError, RunConfig, load_config

DASHBOARD = json.loads((ROOT / "cluster/grafana/dashboards/score-rl.json").read_text())
EXPRS = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def full_train_record() -> dict:
    """Every key a training step's record must hold for telemetry, as the training loop writes it."""
    keys = {key.format(split="train_") for spec in (*telemetry.TRAIN_STEP, *telemetry.SELF_CORRECTION) for key, _ in spec.reads}
    return {"kind": "train", **{key: 1.0 for key in keys}}


def test_names_follow_prometheus_conventions():
    names = [spec.exported for spec in telemetry.ALL]
    assert len(set(names)) == len(names)
    for spec in telemetry.ALL:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), spec.name
        assert spec.name.endswith("_total") is False  # Ray appends it to counters
        assert spec.exported.endswith("_total") == (spec.kind == "counter")
        assert spec.help.isascii(), f"{spec.name}: Ray's metric API takes ASCII help only"
        assert all(label not in {"Component", "NodeAddress", "SessionName", "Version", "WorkerId"} for label in spec.labels)
    assert telemetry.GRADE_LATENCY.exported == "ray_score_grade_latency_seconds"
    assert list(telemetry.GRADE_LATENCY.buckets) == sorted(telemetry.GRADE_LATENCY.buckets)


def test_self_correction_metrics_cover_the_papers_five():
    keys = {key.format(split="") for spec in telemetry.SELF_CORRECTION for key, _ in spec.reads}
    assert keys == {*METRIC_NAMES, "same_answer"}


def test_recording_outside_ray_is_a_no_op_and_starts_no_ray():
    import ray

    telemetry.record(full_train_record())
    telemetry.record({"kind": "eval", **{key: 50.0 for key in (*METRIC_NAMES, "same_answer")}})
    telemetry.record_rollout(100, 0.5)
    telemetry.record_buffer(3, lag=0)
    telemetry.count_grades(["pass", "fail", "pass"])
    with telemetry.grade_timer():
        pass
    assert not ray.is_initialized()


def test_a_record_without_a_metric_key_is_named():
    record = full_train_record()
    del record["grad_norm"]
    with pytest.raises(KeyError, match="grad_norm"):
        telemetry.record(record)


def test_readme_lists_every_exported_metric():
    readme = (ROOT / "README.md").read_text()
    missing = [spec.exported for spec in telemetry.ALL if f"`{spec.exported}`" not in readme]
    assert not missing, f"README's metrics section lacks {missing}"


def test_dashboard_uses_every_metric_and_only_exported_ones():
    def series(spec):  # a histogram is queried through its _bucket / _sum / _count series
        return {f"{spec.exported}_{s}" for s in ("bucket", "sum", "count")} if spec.kind == "histogram" else {spec.exported}

    used = set(re.findall(r"\bray_score_[a-z0-9_]+", " ".join(EXPRS)))
    assert used <= set().union(*map(series, telemetry.ALL)), "not exported: " + str(used - set().union(*map(series, telemetry.ALL)))
    assert not [spec.exported for spec in telemetry.ALL if not series(spec) & used], "metrics without a panel"


def test_dashboard_takes_its_datasource_from_a_variable():
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource" and variable["query"] == "prometheus"
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    rows = [p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert rows == ["Self-correction quality", "Training health", "Throughput and where the time goes", "Actors", "Serving"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(set(ids)) == len(ids)


def test_grafana_provisioning_points_at_the_dashboard_and_ray():
    grafana = ROOT / "cluster/grafana/provisioning"
    (datasource,) = yaml.safe_load((grafana / "datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    providers = yaml.safe_load((grafana / "dashboards/score-rl.yml").read_text())["providers"]
    paths = {p["name"]: p["options"]["path"] for p in providers}
    assert paths["score-rl"] == "${SCORE_RL_GRAFANA}/dashboards" and paths["ray"] == "${RAY_GRAFANA_DASHBOARDS}"


def test_metrics_port_is_checked():
    with pytest.raises(ConfigError, match="cluster.metrics_export_port"):
        load_config(overrides=["cluster.metrics_export_port=70000"])


def test_a_busy_metrics_port_stops_the_run_before_ray_starts(tmp_path, monkeypatch):
    import socket

    import ray

    from learner.driver.startup import StartupError, connect_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StartupError, match=f"cluster.metrics_export_port={port} is not free"):
            connect_ray(RunConfig(output_dir=str(tmp_path), cluster={"metrics_export_port": port}))
    assert not ray.is_initialized()
