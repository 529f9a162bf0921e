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


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class StartupError(RuntimeError):
    """Something outside the config stops the run before training: named, with what to do."""


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes: ray.init retries an unreachable GCS for a long time."""
    import socket

    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise StartupError(
            f"the Ray cluster address {address!r} does not answer ({exc}). Start a head node "
            "(`ray start --head`), or fix cluster.ray_address / RAY_ADDRESS (host:port of the head's GCS)."
        ) from None


def check_port_free(port: int) -> None:
    """On a busy metrics port, ray.init fails after ~30 s with "the current node timed out during
    startup" (Ray 2.60, measured); name the port instead, before starting anything."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError as exc:
            raise StartupError(
                f"cluster.metrics_export_port={port} is not free ({exc}); pick another or leave it unset"
            ) from None


def connect_ray(cfg: RunConfig) -> bool:
    """Attach to the configured or ambient cluster, else start a local one. True if we started it."""
    import ray

    address = cfg.cluster.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=True)
        except Exception as exc:  # Ray raises several types for an unreachable or refusing cluster
            raise StartupError(
                f"cannot connect to the Ray cluster at {address!r} ({type(exc).__name__}: {exc}). "
                "Check that the head node is running (`ray status`), that the address is right, and, "
                "with token authentication, that RAY_AUTH_TOKEN or the token file is available."
            ) from None
        return False
    from learner.placement import local_resources

    c = cfg.cluster
    resources = local_resources(c)  # one machine plays every node group; refuses `auto` counts
    wanted = c.rollout_actors * c.rollout_cpus + c.grader_actors * c.grader_cpus + c.learner_workers * c.learner_cpus
    # Locally, stages run one after another, so actors may share cores: offer enough logical CPUs.
    if c.metrics_export_port:
        check_port_free(c.metrics_export_port)
    ray.init(
        num_cpus=max(os.cpu_count() or 1, int(wanted + 0.999)), resources=resources,
        include_dashboard=False, log_to_driver=True,
        _metrics_export_port=c.metrics_export_port,  # ray.init's only way to fix it (`ray start` has a flag)
    )
    return True


def size_cluster(cfg: RunConfig) -> RunConfig:
    """Turn `auto` counts into numbers from the live nodes, and warn about groups no node can host yet."""
    import ray

    from learner.placement import missing_resources, resolve_counts

    cluster = resolve_counts(cfg.cluster, [n["Resources"] for n in ray.nodes() if n["Alive"]])
    for group, names in missing_resources(cluster, ray.cluster_resources()).items():
        log(f"warning: no live node offers {names} for the {group} actors; they wait until one joins (autoscaler)")
    log(f"actors: {cluster.rollout_actors} rollout, {cluster.grader_actors} grader, {cluster.learner_workers} learner")
    return cfg.model_copy(update={"cluster": cluster})


def open_registry(cfg: RunConfig):
    """The run registry: cluster.redis_url, which must answer, or a local redis-server under output_dir."""
    from learner.redis_server import RedisUnavailable
    from learner.registry import RunRegistry

    try:
        registry = RunRegistry(cfg)
    except RedisUnavailable as exc:
        raise StartupError(str(exc)) from None
    log(f"run registry: {registry.url} (python -m learner.runs list)")
    return registry


def build(cfg: RunConfig, task, base_dir: str):
    import ray

    from actors.buffer import TraceBuffer
    from actors.rollout_actor import RolloutActor
    from graders.pool import GraderPool
    from learner.controller import Handles
    from learner.group import LearnerGroup
    from learner.placement import ray_options
    from learner.weight_sync import make_weight_sync

    c = cfg.cluster
    threads = c.torch_threads or os.cpu_count() or 1
    rollout = [
        RolloutActor.options(**ray_options(c, "rollout")).remote(
            c.engine, base_dir, cfg.task.name, cfg.task.params, threads
        )
        for _ in range(c.rollout_actors)
    ]
    graders = GraderPool(
        cfg.task.name, cfg.task.params, num_actors=c.grader_actors,
        batch_timeout_s=c.grade_timeout_s, num_cpus_per_actor=c.grader_cpus, resources=c.grader_resources,
    )
    learners = LearnerGroup(
        base_dir, c.learner_workers, cpus=c.learner_cpus, gpus=c.learner_gpus, threads=threads,
        resources=c.learner_resources,
        lr=cfg.score.lr, grad_clip=cfg.score.grad_clip, temperature=cfg.score.temperature, seed=cfg.seed,
    )
    buffer = ray.remote(TraceBuffer).options(num_cpus=0).remote(c.buffer_capacity, c.max_policy_lag)
    return Handles(rollout, graders, learners, buffer, make_weight_sync(c, learners, rollout))


def run(cfg: RunConfig) -> dict[str, dict[str, float]]:
    import ray

    from graders.registry import make_task
    from learner import telemetry
    from learner.controller import Controller
    from learner.loop import held_out_label
    from learner.metrics import format_table
    from learner.run_dir import RunDir, plot_training
    from learner.warmstart import ensure_base_model

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

    try:
        handles = build(cfg, task, base_dir)
        controller = Controller(cfg, task, handles, on_record, log)
        started = time.perf_counter()
        log(f"evaluating the base model on {held_out_label(cfg.task)} (greedy)")
        rows = {"base": controller.evaluate(step=0)}
        controller.train()
        total_steps = cfg.score.stage1_steps + cfg.score.stage2_steps
        log("evaluating the trained policy")
        rows["SCoRe" if cfg.score.method == "score" else cfg.score.method] = controller.evaluate(step=total_steps)
        handles.learners.save(str(run_dir.checkpoint))
        for name in os.listdir(base_dir):  # the tokenizer travels with the checkpoint
            if name.startswith("tokenizer") or name.endswith(".jinja"):
                shutil.copy(os.path.join(base_dir, name), run_dir.checkpoint)
        plot_training(run_dir.records(), run_dir.path / "training.png")
        handles.learners.close()
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
    try:
        run(cfg)
    except (StartupError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
