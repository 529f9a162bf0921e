"""The single controller: `python -m learner.main [--config FILE] [--set key=value ...]`, or
`python -m learner.main --resume RUN_DIR` to continue a stopped run from its newest checkpoint.

With no arguments: a local Ray, the built-in task, the cached tiny base model (warm-started if
missing), Stage I then Stage II, and the five metrics for the base and the trained policy.
Under `ray job submit` it attaches to that cluster (RAY_ADDRESS) and does the same.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from protos import ConfigError, RunConfig, load_config
from protos.config import changed_keys


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
    parser.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue a stopped run from its newest good checkpoint, in the same run directory, with the "
        "config it was started with (--set may change the keys --allow-change names)",
    )
    parser.add_argument(
        "--allow-change", dest="allow_change", action="append", default=[], metavar="KEY",
        help="with --resume: a config key (or a whole section, e.g. cluster) that --set may change (repeatable)",
    )
    return parser.parse_args(argv)


def resume_config(run_dir: Path, overrides: list[str], allowed: list[str]) -> RunConfig:
    """The stopped run's config with `overrides`; a change to a key not in `allowed` is refused,
    naming the keys, because a resumed run must continue the same experiment."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory?")
    saved = load_config(saved_file)
    cfg = load_config(saved_file, overrides)
    refused = [key for key in changed_keys(saved, cfg)
               if not any(key == a or key.startswith(a + ".") for a in allowed)]
    if refused:
        raise ConfigError(
            f"--resume {run_dir}: --set changes {', '.join(refused)} from the run's config; a resumed run continues "
            "the same experiment, so pass --allow-change KEY for each key that may change"
        )
    return cfg


def run(cfg: RunConfig, resume: Path | None = None) -> dict[str, dict[str, float]]:
    import ray

    from common import telemetry
    from graders.registry import make_task
    from learner.driver import checkpoint
    from learner.driver.loop import Stopped, TrainLoop, held_out_label
    from learner.driver.metrics import format_table
    from learner.driver.ray_backend import RayBackend
    from learner.driver.recovery import Recoveries
    from learner.driver.startup import connect_ray, log, open_registry, size_cluster
    from learner.model.base import content_hash
    from learner.model.warmstart import ensure_base_model
    from learner.tracking import loggers
    from learner.tracking.run_dir import RunDir, plot_training

    loggers.check(cfg)  # a tracker's missing package is an error now, before anything starts
    task = make_task(cfg.task.name, cfg.task.params)
    base_dir = str(ensure_base_model(cfg, task, log))
    base = {"base_model": base_dir, "base_sha256": content_hash(base_dir)}  # which base: in the log, config.yaml, registry
    log(f"base model sha256: {base['base_sha256'][:12]}")
    reference = checkpoint.model_fingerprint(base_dir)
    resume_from = resume and resume_point(resume, reference, log)
    started_ray = connect_ray(cfg)
    log(f"Prometheus metrics (ray_score_*): {' '.join(telemetry.metrics_endpoints())}")
    cfg = size_cluster(cfg)
    registry = open_registry(cfg)
    if resume_from:
        attempt = 2 + len(RunDir(resume).events("resumes"))
        run_dir = RunDir.reopen(resume, cfg, resume_from.loop_state()["records_written"], attempt, base)
        run_dir.log_event("resumes", {"attempt": attempt, "from_step": resume_from.step})
        log(f"resuming {run_dir.path} from {resume_from.path.name} (attempt {attempt})")
    else:
        attempt, run_dir = 1, RunDir.create(cfg, base)
        log(f"run directory: {run_dir.path}")
    entry = registry.open_run(run_dir.path.name, cfg, run_dir.path, log, attempt=attempt, base=base)
    trackers = loggers.Trackers([], log)

    def on_record(record: dict) -> None:
        run_dir.log_metrics(record)
        entry.record(record)
        telemetry.record(record)
        trackers.log(record)

    def on_checkpoint(step: int) -> None:
        started = time.perf_counter()
        state = {**loop.state_dict(), "records_written": run_dir.records_written, "reference_model": reference}
        saved = checkpoint.save(checkpoint.checkpoints_dir(run_dir.path), step, state, backend.save_state,
                                cfg.checkpoint.keep_last)
        log(f"checkpoint {saved.path.name} ({time.perf_counter() - started:.1f}s)")

    recoveries = Recoveries(cfg.cluster.max_restarts, lambda event: run_dir.log_event("recoveries", event), log)

    def start(point: checkpoint.Checkpoint | None):
        """The run's actors and loop, continuing from `point` if given."""
        backend = RayBackend(cfg, base_dir, recoveries)
        loop = TrainLoop(cfg, task, backend, on_record, log, on_checkpoint)
        if point is not None:
            backend.load_state(str(point.learner_dir))
            loop.load_state_dict(point.loop_state())
        stop_on_signals(loop)
        return backend, loop

    def recover(error: Exception):
        """After a learner rank died (or a rollout actor could not be replaced in place): every
        actor rebuilt, from the last checkpoint."""
        died_after = loop.version
        point = checkpoint.latest(checkpoint.checkpoints_dir(run_dir.path), log)
        began = recoveries.begin(error, f"rebuilding the actors and continuing from {point.path.name} "
                                        f"(steps lost: {died_after - point.step})")
        backend.shutdown()
        run_dir.cut_back(point.loop_state()["records_written"])
        rebuilt = start(point)
        recoveries.done(began, error, "rebuild", died_after_step=died_after, from_step=point.step,
                        steps_lost=died_after - point.step)
        return rebuilt

    try:
        trackers = loggers.Trackers.open(cfg, run_dir.path, log)
        backend, loop = start(resume_from)
        started = time.perf_counter()
        if resume_from:
            rows = {"base": next(r for r in run_dir.records() if r["kind"] == "eval" and r["step"] == 0)}
        else:
            log(f"evaluating the base model on {held_out_label(cfg.task)} (greedy)")
            rows = {"base": loop.evaluate(step=0)}
            on_checkpoint(0)  # so that a recovery or a resume before the first periodic one starts from here
        total_steps = cfg.score.stage1_steps + cfg.score.stage2_steps
        while True:
            try:
                loop.train()
                log("evaluating the trained policy")
                rows["SCoRe" if cfg.score.method == "score" else cfg.score.method] = loop.evaluate(step=total_steps)
                backend.save(str(run_dir.checkpoint))
                break
            except ray.exceptions.RayActorError as exc:  # an actor died; Ray's other errors are bugs, not faults
                backend, loop = recover(exc)
        for name in os.listdir(base_dir):  # the tokenizer travels with the checkpoint
            if name.startswith("tokenizer") or name.endswith(".jinja"):
                shutil.copy(os.path.join(base_dir, name), run_dir.checkpoint)
        plot_training(run_dir.records(), run_dir.path / "training.png")
        backend.close()
        run_dir.finish({
            "metrics": rows, "steps": total_steps, "wall_s": time.perf_counter() - started,
            **base, "checkpoint": str(run_dir.checkpoint), "attempts": attempt,
            "recoveries": len(run_dir.events("recoveries")),
        })
        entry.finish(str(run_dir.checkpoint))
        trackers.finish(format_table(rows), rows)
    except Stopped as exc:
        exc.resume_command = f"python -m learner.main --resume {run_dir.path}"
        run_dir.fail(f"{exc}; resume with: {exc.resume_command}")
        entry.fail(f"{exc}; resume with: {exc.resume_command}")
        trackers.close()
        raise
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        run_dir.fail(reason)
        entry.fail(reason)
        trackers.close()
        raise
    finally:
        registry.close()
        if started_ray:
            ray.shutdown()
    print("\nheld-out split, greedy, % of problems:\n" + format_table(rows), flush=True)
    log(f"done: {run_dir.path}")
    return rows


def resume_point(run_dir: Path, reference: str, log):
    """The newest good checkpoint of `run_dir`, checked to continue from the same reference model."""
    from learner.driver import checkpoint

    found = checkpoint.latest(checkpoint.checkpoints_dir(run_dir), log)
    if found is None:
        raise checkpoint.CheckpointError(
            f"{run_dir} has no checkpoint to resume from: the run stopped before its first (after the base evaluation)"
        )
    if found.loop_state()["reference_model"] != reference:
        raise checkpoint.CheckpointError(
            f"{found.path} was trained against another base (reference) model than the one this config gives now"
        )
    return found


def stop_on_signals(loop) -> None:
    """SIGTERM (preemption) and SIGINT (Ctrl-C) stop the run at the next step boundary, after a
    checkpoint; a second one stops it at once."""
    def request_stop(signum, frame):
        if loop.stop_requested:
            raise KeyboardInterrupt
        loop.stop_requested = signal.Signals(signum).name
        print(f"\n{loop.stop_requested}: stopping after this step, with a checkpoint (again to stop now)", flush=True)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            if args.config:
                raise ConfigError("--resume takes the run's own config.yaml; --config cannot be given with it")
            cfg = resume_config(Path(args.resume), args.overrides, args.allow_change)
        else:
            if args.allow_change:
                raise ConfigError("--allow-change is for --resume")
            cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from learner.driver.checkpoint import CheckpointError
    from learner.driver.loop import Stopped
    from learner.driver.startup import StartupError
    from learner.tracking.loggers import LoggerUnavailable

    try:
        run(cfg, Path(args.resume) if args.resume else None)
    except Stopped as exc:
        print(f"{exc}, with a checkpoint; resume with: {exc.resume_command}", file=sys.stderr)
        return 3
    except (StartupError, CheckpointError, LoggerUnavailable, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
