"""A real Prometheus for the metrics tests, scraping a Ray head through the service-discovery file it
writes, and the Grafana dashboard's expressions by row."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from common.ports import free_ports
from e2e import ROOT

DASHBOARD = ROOT / "cluster/grafana/dashboards/score-rl.json"


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:g}s")
        time.sleep(0.5)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def prometheus_config(discovery_file: Path) -> dict:
    """cluster/prometheus/prometheus.yml with this head's discovery file and a 0.5 s scrape for a short run."""
    cfg = yaml.safe_load((ROOT / "cluster/prometheus/prometheus.yml").read_text())
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "500ms"
    (ray_job,) = [job for job in cfg["scrape_configs"] if job["job_name"] == "ray"]  # not the local run's
    ray_job["file_sd_configs"] = [{"files": [str(discovery_file)]}]
    return {**cfg, "scrape_configs": [ray_job]}


@contextmanager
def prometheus(head_temp_dir: Path, tmp: Path) -> Iterator[str]:
    """A Prometheus scraping the Ray head whose temp dir is `head_temp_dir`; yields its URL."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is missing: `make setup` installs it"
    discovery = head_temp_dir / "prom_metrics_service_discovery.json"
    wait_for(discovery.exists, 60, "the head's Prometheus service-discovery file")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(discovery)))
    (port,) = free_ports(1)
    with open(tmp / "prometheus.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{url}/-/ready"), 60, "Prometheus ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def query(url: str, path: str, **params) -> list[dict]:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=30) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def dashboard_rows() -> dict[str, list[str]]:
    """Row title -> the PromQL expressions of the panels under it."""
    rows: dict[str, list[str]] = {}
    title = None
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            title = panel["title"]
            rows[title] = []
        else:
            rows[title] += [t["expr"] for t in panel.get("targets", [])]
    return rows
