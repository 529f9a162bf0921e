"""The single controller: `python -m learner.main [--config FILE] [--set key=value ...]`.

With no arguments: a local Ray, the built-in task, the cached tiny base model (warm-started if
missing), Stage I then Stage II, and the five metrics for the base and the trained policy.
Under `ray job submit` it attaches to that cluster (RAY_ADDRESS) and does the same.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback

from protos import ConfigError, RunConfig, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m learner.main",
        description="Train a model to self-correct with SCoRe (Stage I, then Stage II) and evaluate it.",
    )
    parser.add_argument("--config", help="a RunConfig YAML file (cluster/configs/ has examples)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting, e.g. --set score.alpha=5 (repeatable)",
    )
    return parser.parse_args(argv)


def run(cfg: RunConfig) -> dict[str, dict[str, float]]:
    import ray

    from common import telemetry
    from graders.registry import make_task
    from learner.driver.loop import TrainLoop, held_out_label
    from learner.driver.metrics import format_table
    from learner.driver.ray_backend import RayBackend
    from learner.driver.startup import connect_ray, log, open_registry, size_cluster
    from learner.model.warmstart import ensure_base_model
    from learner.tracking.run_dir import RunDir, plot_training

    task = make_task(cfg.task.name, cfg.task.params)
    base_dir = str(ensure_base_model(cfg, task, log))
    started_ray = connect_ray(cfg)
    log(f"Prometheus metrics (ray_score_*): {' '.join(telemetry.metrics_endpoints())}")
    cfg = size_cluster(cfg)
    registry = open_registry(cfg)
    run_dir = RunDir(cfg)
    log(f"run directory: {run_dir.path}")
    entry = registry.open_run(run_dir.path.name, cfg, run_dir.path, log)

    def on_record(record: dict) -> None:
        run_dir.log_metrics(record)
        entry.record(record)
        telemetry.record(record)

    try:
        backend = RayBackend(cfg, base_dir)
        loop = TrainLoop(cfg, task, backend, on_record, log)
        started = time.perf_counter()
        log(f"evaluating the base model on {held_out_label(cfg.task)} (greedy)")
        rows = {"base": loop.evaluate(step=0)}
        loop.train()
        total_steps = cfg.score.stage1_steps + cfg.score.stage2_steps
        log("evaluating the trained policy")
        rows["SCoRe" if cfg.score.method == "score" else cfg.score.method] = loop.evaluate(step=total_steps)
        backend.save(str(run_dir.checkpoint))
        for name in os.listdir(base_dir):  # the tokenizer travels with the checkpoint
            if name.startswith("tokenizer") or name.endswith(".jinja"):
                shutil.copy(os.path.join(base_dir, name), run_dir.checkpoint)
        plot_training(run_dir.records(), run_dir.path / "training.png")
        backend.close()
        run_dir.finish({
            "metrics": rows, "steps": total_steps, "wall_s": time.perf_counter() - started,
            "base_model": base_dir, "checkpoint": str(run_dir.checkpoint),
        })
        entry.finish(str(run_dir.checkpoint))
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        run_dir.fail(reason)
        entry.fail(reason)
        raise
    finally:
        registry.close()
        if started_ray:
            ray.shutdown()
    print("\nheld-out split, greedy, % of problems:\n" + format_table(rows), flush=True)
    log(f"done: {run_dir.path}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from learner.driver.startup import StartupError

    try:
        run(cfg)
    except (StartupError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
