"""The serving API under load, on loopback: requests per second and p50 / p95 / p99 latency at 1, 4 and 16
concurrent clients, attempts=1 against attempts=2, one replica against two.

    python benchmarks/bench_serve.py [--engines transformers,vllm] [--requests 48] [--cell-s 20]

A private local Ray and Serve (127.0.0.1, free ports); the cached warm-started base model; held-out sort
prompts, sampled at temperature 1. Each cell sends `--requests` requests (or stops after `--cell-s`
seconds) from that many client threads; the first request of each replica set is a warm-up, not counted.
No pass/fail. The machine's other load shows in the numbers: compare columns of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.ports import free_port  # noqa: E402
from graders.registry import make_task  # noqa: E402
from protos import load_config  # noqa: E402

CONCURRENCY = (1, 4, 16)


def post(url: str, body: dict) -> float:
    started = time.perf_counter()
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.status == 200, r.status
        r.read()
    return time.perf_counter() - started


def cell(url: str, model: str, prompts: list[str], clients: int, attempts: int, requests: int, limit_s: float) -> dict:
    """`requests` requests from `clients` threads (fewer if `limit_s` runs out): rps and latency percentiles."""
    latencies: list[float] = []
    next_index = iter(range(requests))
    lock = threading.Lock()
    deadline = time.monotonic() + limit_s

    def client():
        while time.monotonic() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            body = {"model": model, "prompt": prompts[i % len(prompts)], "temperature": 1.0, "attempts": attempts}
            latency = post(url, body)
            with lock:
                latencies.append(latency)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
    return {"n": len(latencies), "rps": len(latencies) / wall, "p50": p50, "p95": p95, "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="transformers,vllm")
    parser.add_argument("--requests", type=int, default=48, help="requests per cell")
    parser.add_argument("--cell-s", type=float, default=20.0, help="time limit per cell")
    args = parser.parse_args()

    import ray
    from ray import serve

    from actors.serve.deployment import ServeArgs, application
    from learner.model.warmstart import ensure_base_model

    cfg = load_config(overrides=[f"model.cache_dir={ROOT / '.cache/models'}"])
    task = make_task(cfg.task.name, cfg.task.params)
    model_dir = ensure_base_model(cfg, task)
    prompts = [p.prompt for p in task.eval_problems(64)]
    os.environ.pop("RAY_ADDRESS", None)  # a private local Ray, never someone else's cluster
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/v1/completions"
    print(f"model {model_dir.name} ({os.cpu_count()} cores), {args.requests} requests or {args.cell_s:g} s per cell, "
          "temperature 1, default max_tokens (the run's 48)")
    try:
        for engine in args.engines.split(","):
            for replicas in (1, 2):
                serve.run(application(ServeArgs(model=str(model_dir), engine=engine, name="bench"), replicas),
                          name="bench", route_prefix="/")
                post(url, {"model": "bench", "prompt": prompts[0], "attempts": 2})  # warm-up
                print(f"\n{engine}, {replicas} replica(s)")
                print(f"{'clients':>7} {'attempts':>8} {'n':>4} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
                for clients in CONCURRENCY:
                    results = {}
                    for attempts in (1, 2):
                        r = results[attempts] = cell(url, "bench", prompts, clients, attempts, args.requests, args.cell_s)
                        print(f"{clients:>7} {attempts:>8} {r['n']:>4} {r['rps']:>7.1f} {r['p50']:>8.0f} {r['p95']:>8.0f} "
                              f"{r['p99']:>8.0f}", flush=True)
                    print(f"{'':>7} attempts=2 / attempts=1 p50 latency: {results[2]['p50'] / results[1]['p50']:.2f}x")
                serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
