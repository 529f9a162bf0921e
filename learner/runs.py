"""List and show the runs in the registry: `python -m learner.runs [list | show RUN_ID]`.

Reads the Redis at --redis-url, or else the embedded registry of --output-dir (default `runs`),
starting its redis-server on the saved data for as long as it reads if no run has it up.

A run's status is running, finished, failed, or lost: its hash says running but its process stopped
sending heartbeats (killed, its machine gone) without finishing; `updated` is when it last wrote.
`attempt` counts the run's starts: a resumed run is attempt 2, 3, ...
"""
from __future__ import annotations

import argparse
import os
import sys

from learner.tracking.redis_server import EmbeddedRedis, RedisUnavailable
from learner.tracking.registry import LOST, connect, embedded_dir, get_run, list_runs

LOST_MEANS = "its process stopped without finishing: killed, or its machine gone; `updated` is when it last wrote"
COLUMNS = ("run", "status", "attempt", "stage", "step", "version", "Acc@t1", "Acc@t2", "Δ", "base", "updated")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m learner.runs", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n")[2])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--redis-url", help="the registry's Redis (a run's cluster.redis_url)")
    source.add_argument("--output-dir", default="runs",
                        help="read the embedded registry that runs with this output_dir wrote (default: runs)")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("list", help="one line per run, newest first (the default)")
    show = commands.add_parser("show", help="everything the registry holds about one run")
    show.add_argument("run_id")
    return parser.parse_args(argv)


def table(runs: list[dict]) -> str:
    rows = [COLUMNS]
    for r in runs:
        ev = r["metrics"].get("eval", {})
        rows.append((
            r["run_id"], r["status"], str(r["attempt"]), str(r["stage"] or "-"), str(r["step"]),
            str(r["policy_version"]), _pct(ev.get("acc_t1")), _pct(ev.get("acc_t2")),
            _pct(ev.get("delta"), signed=True), (r.get("base_sha256") or "-")[:12], r["updated"],
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if any(r["status"] == LOST for r in runs):
        lines.append(f"\n{LOST}: {LOST_MEANS}")
    return "\n".join(lines)


def details(run: dict) -> str:
    if run["status"] == LOST:
        run = {**run, "status": f"{LOST} ({LOST_MEANS})"}
    lines = [f"{key:15} {run[key]}" for key in (
        "run_id", "status", "attempt", "stage", "step", "policy_version", "checkpoint", "run_dir",
        "started", "resumed", "updated", "config_hash", "base_model", "base_sha256", "error",
    ) if run.get(key) not in ("", None)]
    for kind, values in run["metrics"].items():
        lines.append(f"{'last ' + kind:15} " + "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
    lines += ["config:", *("  " + line for line in run["config"].splitlines())]
    return "\n".join(lines)


def _pct(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else f"{value:+.1f}" if signed else f"{value:.1f}"


def _answer(client, args: argparse.Namespace, where: str) -> int:
    if args.command == "show":
        run = get_run(client, args.run_id)
        if run is None:
            print(f"error: no run {args.run_id!r} in {where}; `python -m learner.runs list` shows the ids",
                  file=sys.stderr)
            return 1
        print(details(run))
        return 0
    runs = list_runs(client)
    print(table(runs) if runs else f"no runs in {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.redis_url:
            return _answer(connect(args.redis_url), args, args.redis_url)
        data = embedded_dir(args.output_dir)
        if not data.is_dir():
            print(f"error: no run registry in {data}: no run with output_dir {args.output_dir!r} used the embedded "
                  "Redis; pass the runs' --output-dir, or --redis-url for runs with cluster.redis_url", file=sys.stderr)
            return 1
        with EmbeddedRedis(data) as server:
            return _answer(connect(server.url), args, f"the registry in {data}")
    except RedisUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:  # `... | head` stopped reading: not an error (the registry's server is already stopped)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        code = 0
    sys.exit(code)
