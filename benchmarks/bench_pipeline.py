"""The actor-learner pipeline: the default run's first steps at policy lag 0, 1 and 2, side by side.

    python benchmarks/bench_pipeline.py [--steps N] [--rounds R] [--threads 1,2] [--lags 0,1,2]
                                        [--reference learner,rollout] [--set key=value ...]

Each configuration is a real run (local Ray, vLLM rollouts, the default model and batch) cut to
N steps with no evaluation; the first two steps (actor warm-up, the pipeline filling) are not
counted. Configurations run in turns, R rounds, so a busy machine slows them alike; figures are
medians over rounds and every ratio is to lag 0 measured in the same round and the same thread
setting, with the reference model on the learner (the schedule before `cluster.reference_on`).
Printed per configuration: steps per second, sampled tokens per second (both attempts),
the learner's busy fraction (its update time over wall time), the mean and max policy lag.

Thread settings: `cluster.torch_threads=1` (the default here: each role computes with the one CPU
it reserves) gives the rollout actor and the learner a core each, the shape of a cluster, where
they hold different devices; `--threads 1,2` adds a run where each takes both of the two cores.
`--reference learner,rollout` compares where the reference model scores the traces
(`cluster.reference_on`): in the learner's update, or on the rollout actor right after sampling.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(steps: int, lag: int, threads: int, reference: str, overrides: list[str]) -> dict[str, float]:
    from learner.main import run
    from protos import load_config

    out = tempfile.mkdtemp(prefix="bench-pipeline-")
    cfg = load_config(None, [
        "score.stage1_steps=" + str(steps), "score.stage2_steps=0", "eval.every_steps=0", "task.eval_size=8",
        f"cluster.max_policy_lag={lag}", f"cluster.torch_threads={threads}", f"cluster.reference_on={reference}",
        f"output_dir={out}", *overrides,
    ])
    run(cfg)
    (run_dir,) = [d for d in Path(out).iterdir() if (d / "summary.json").exists()]
    train = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in train if r["kind"] == "train" and r["step"] > 2]
    wall = sum(r["step_s"] for r in steady)
    return {
        "steps_per_s": len(steady) / wall,
        "tokens_per_s": sum(r["rollout_tokens"] for r in steady) / wall,
        "busy": sum(r["learner_s"] for r in steady) / wall,
        "lag_mean": statistics.mean(r["policy_lag_mean"] for r in steady),
        "lag_max": max(r["policy_lag_max"] for r in steady),
        "step_s": statistics.median(r["step_s"] for r in steady),
        "learner_s": statistics.median(r["learner_s"] for r in steady),
        "rollout_wait_s": statistics.median(r["rollout_s"] for r in steady),
        "grading_wait_s": statistics.median(r["grading_s"] for r in steady),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="steps per run (the first two are not counted)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lags", default="0,1,2")
    parser.add_argument("--threads", default="1,2", help="cluster.torch_threads settings to compare")
    parser.add_argument("--reference", default="learner,rollout", help="cluster.reference_on settings to compare")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    lags = [int(x) for x in args.lags.split(",")]
    thread_settings = [int(x) for x in args.threads.split(",")]
    references = args.reference.split(",")
    configs = [(t, ref, lag) for t in thread_settings for ref in references for lag in lags]

    results: dict[tuple, list[dict]] = {}
    for round_ in range(args.rounds):
        for threads, reference, lag in configs:
            print(f"== round {round_ + 1}/{args.rounds}: torch_threads={threads} reference_on={reference} "
                  f"max_policy_lag={lag}", flush=True)
            results.setdefault((threads, reference, lag), []).append(
                measure(args.steps, lag, threads, reference, args.overrides))

    print(f"\nPipeline, default model and batch, {args.steps - 2} steady steps per run, median of {args.rounds} rounds; "
          f"ratios to lag {lags[0]} with the reference on the {references[0]}, same round and threads:")
    print(f"{'threads':>7} {'reference':>9} {'lag':>3} {'steps/s':>8} {'x base':>7} {'tokens/s':>9} {'x base':>7} "
          f"{'learner busy':>13} {'mean lag':>9} {'max lag':>8} {'step s':>7} {'learn s':>8} {'rollout wait s':>15} "
          f"{'grading wait s':>15}")
    for threads, reference, lag in configs:
        runs, base = results[(threads, reference, lag)], results[(threads, references[0], lags[0])]
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        ratio = lambda key: statistics.median(r[key] / b[key] for r, b in zip(runs, base))  # noqa: E731
        print(f"{threads:>7} {reference:>9} {lag:>3} {med('steps_per_s'):8.3f} {ratio('steps_per_s'):6.2f}x "
              f"{med('tokens_per_s'):9.0f} {ratio('tokens_per_s'):6.2f}x {100 * med('busy'):12.0f}% "
              f"{med('lag_mean'):9.2f} {max(r['lag_max'] for r in runs):8d} {med('step_s'):7.2f} "
              f"{med('learner_s'):8.2f} {med('rollout_wait_s'):15.2f} {med('grading_wait_s'):15.3f}")

if __name__ == "__main__":
    main()
