"""Metrics for real: a short run on a `ray start --head` node, scraped by a real Prometheus through the
service-discovery file the head writes, checked through Prometheus's HTTP query API; every PromQL
expression of the Grafana dashboard evaluated against that Prometheus; and a local `ray.init`
serving the same metrics on the configured port.
"""
from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e import quick_overrides, run_cli
from common import telemetry
from common.ports import free_ports
from prom import dashboard_rows, prometheus, query, wait_for
from ray_head import ray_head

pytestmark = pytest.mark.slow

# What Grafana puts in for $__rate_interval; it must span a few of this test's 0.5 s scrapes.
RATE_INTERVAL = "20s"


@dataclass
class Scraped:
    """The Prometheus that watched the run, and the run's own records to compare with."""

    url: str
    start: float
    end: float
    run: Path

    def series(self, expr: str) -> list[dict]:
        """`expr` over the whole run: one entry per series, with its (time, value) points."""
        return query(self.url, "/api/v1/query_range", query=expr, start=self.start, end=self.end, step=1)

    def last(self, expr: str) -> dict[tuple, float]:
        """The last value of each series of `expr` during the run, keyed by its labels' values."""
        result = query(self.url, "/api/v1/query", query=f"last_over_time(({expr})[30m:1s])", time=self.end)
        return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in result}

    def one(self, expr: str) -> float:
        (value,) = self.last(expr).values()
        return value

    def records(self) -> list[dict]:
        return [json.loads(line) for line in (self.run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    # Ray ships metric values every 10 s by default. On a quiet machine this run grades everything within
    # about 2 s; a histogram series whose first report already holds every grade has no rate, so the
    # reports (and scrapes) must come several times within that burst.
    with ray_head(env={"RAY_metrics_report_interval_ms": "500"}) as head, prometheus(head.temp_dir, tmp) as url:
        start = time.time()
        # six steps, not quick_overrides' four: with rollouts a step ahead, a loaded machine once graded a
        # whole four-step run within one report of each grader, leaving the latency histogram no rate
        steps = ["--set", "score.stage1_steps=3", "--set", "score.stage2_steps=3"]
        proc = run_cli(quick_overrides(tmp) + steps, env={**head.env, "RAY_ADDRESS": head.address})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert re.search(rf"Prometheus metrics \(ray_score_\*\): http://[\d.]+:{head.metrics_port}/metrics", proc.stdout)
        time.sleep(5)  # the last report interval and scrape
        (run,) = [d for d in (tmp / "runs").iterdir() if (d / "metrics.jsonl").exists()]
        yield Scraped(url, start, time.time(), run)


def test_every_step_metric_equals_what_the_run_recorded(scraped):
    """The gauges of the last training step and of the final evaluation hold the run's own numbers."""
    records = scraped.records()
    last_train = [r for r in records if r["kind"] == "train"][-1]
    final_eval = [r for r in records if r["kind"] == "eval"][-1]
    checks = [(spec, key, labels, last_train) for spec in telemetry.TRAIN_STEP for key, labels in spec.reads]
    for split, record, prefix in (("train", last_train, "train_"), ("eval", final_eval, "")):
        checks += [(spec, key.format(split=prefix), {**labels, "split": split}, record)
                   for spec in telemetry.SELF_CORRECTION for key, labels in spec.reads]
    for spec, key, labels, record in checks:
        selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
        value = scraped.one(f"max({spec.exported}{{{selector}}})")
        assert value == pytest.approx(record[key], rel=1e-6, abs=1e-9), (spec.exported, labels, key)
    assert last_train["step"] == 6 and last_train["stage"] == 2 and last_train["policy_version"] == 6


def test_values_are_sane(scraped):
    m = scraped
    assert m.one("max(ray_score_learning_rate)") == pytest.approx(3e-5)  # score.stage2_lr's default (the last step is Stage II)
    assert m.one("max(ray_score_stage)") == 2  # a gauge: a short stage may fall between two reports
    for attempt in "12":
        assert 0 <= m.one(f'max(ray_score_kl{{attempt="{attempt}"}})') < 10
        assert 0 <= m.one(f'max(ray_score_reward{{attempt="{attempt}"}})') <= 1
    # 0 is sane here: quick_overrides' 30-step warm start rarely solves a problem, and equal rewards
    # give zero advantages (the equality with metrics.jsonl is checked above)
    assert 0 <= m.one("max(ray_score_grad_norm)") < 1e4
    assert 0 <= m.one("max(ray_score_logprob_mismatch_abs)") < 1  # the engines' weights are one update behind at most
    for split in ("train", "eval"):
        acc = m.last(f'max by (attempt) (ray_score_accuracy_percent{{split="{split}"}})')
        assert len(acc) == 2 and all(0 <= v <= 100 for v in acc.values())
        delta = m.one(f'max(ray_score_delta_percent{{split="{split}"}})')
        i2c = m.one(f'max(ray_score_delta_i2c_percent{{split="{split}"}})')
        c2i = m.one(f'max(ray_score_delta_c2i_percent{{split="{split}"}})')
        assert delta == pytest.approx(i2c - c2i, abs=1e-6)

    phases = m.last("max by (phase) (ray_score_step_phase_seconds)")
    assert {dict(k)["phase"] for k in phases} == set(telemetry.STEP_PHASES)
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= m.one("max(ray_score_step_seconds)")
    per_actor = m.last("max by (actor) (ray_score_rollout_tokens_per_second)")
    assert len(per_actor) == 1 and all(v > 0 for v in per_actor.values())  # cluster.rollout_actors = 1
    assert m.one("max(ray_score_learner_tokens_per_second)") > 0
    assert m.one("max(ray_score_trace_buffer_depth)") >= 0
    assert 0 <= m.one("max(ray_score_policy_version_lag)") <= 1  # cluster.max_policy_lag = 1, the default
    assert m.one('max(ray_score_importance_ratio{stat="mean"})') > 0
    assert 0 <= m.one("max(ray_score_importance_clipped_fraction)") <= 1
    assert m.one("max(ray_score_stale_batches_dropped)") == 0


def test_every_grade_is_counted_once_by_status(scraped):
    records = scraped.records()
    steps = sum(r["kind"] == "train" for r in records)
    evals = sum(r["kind"] == "eval" for r in records)
    traces = steps * 4 * 2 + evals * 8  # quick_overrides: 4 prompts x 2 samples a step; 8 eval problems, 1 each
    # counters live per process (the driver's pool and each grader actor): the total is the sum of their last values
    by_status = {dict(k)["status"]: v for k, v in scraped.last("sum by (status) (ray_score_grades_total)").items()}
    assert set(by_status) <= {"pass", "fail", "timeout", "error", "sandbox_violation"}
    assert sum(by_status.values()) == 2 * traces  # both attempts of every trace
    assert scraped.one("sum(ray_score_grade_latency_seconds_count)") == 2 * traces
    assert 0 < scraped.one("sum(ray_score_grade_latency_seconds_sum)") < 2 * traces  # the sort task grades in µs


def test_every_dashboard_expression_returns_data(scraped):
    """The dashboard cannot drift from the code: an expression that matches nothing fails here. (The
    Serving row's are checked against a serving deployment, in test_serve.py.)"""
    exprs = [expr for row, row_exprs in dashboard_rows().items() if row != "Serving" for expr in row_exprs]
    assert len(exprs) > 20
    empty = []
    for expr in exprs:
        points = [float(v) for s in scraped.series(expr.replace("$__rate_interval", RATE_INTERVAL)) for _, v in s["values"]]
        if not any(math.isfinite(v) for v in points):
            empty.append(expr)
    assert not empty, f"dashboard expressions with no data after a run: {empty}"


def test_local_ray_serves_metrics_on_the_configured_port(tmp_path, monkeypatch):
    """The embedded default (`python -m learner.main` starts its own Ray) exports the same metrics."""
    import ray

    from learner.driver.startup import connect_ray
    from protos import RunConfig

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "2000")
    (port,) = free_ports(1)
    assert connect_ray(RunConfig(output_dir=str(tmp_path), cluster={"metrics_export_port": port}))
    try:
        (endpoint,) = telemetry.metrics_endpoints()
        assert endpoint.endswith(f":{port}/metrics")
        telemetry.record({"kind": "eval", "acc_t1": 62.5, "acc_t2": 75.0, "delta": 12.5, "delta_i2c": 25.0,
                               "delta_c2i": 12.5, "same_answer": 50.0})

        def exported() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            return any(line.startswith("ray_score_accuracy_percent{") and 'attempt="2"' in line
                       and 'split="eval"' in line and line.endswith(" 75.0") for line in text.splitlines())

        wait_for(exported, 60, f"ray_score_accuracy_percent on http://127.0.0.1:{port}/metrics")
    finally:
        ray.shutdown()
