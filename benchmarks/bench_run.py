"""RL-step figures for the default config: where a step's time goes, throughput, weight-sync cost.

    python benchmarks/bench_run.py [--steps N] [--set key=value ...]

Runs a short real job (local Ray, default config but fewer steps), drops the first step of each
stage (actor warm-up), and prints medians. The weight-sync figure is compared with one in-memory
copy of the same state dict: the ratio is what to drive towards 1.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def in_memory_copy_s(model_dir: str, repeats: int = 20) -> tuple[float, float]:
    import torch
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    size_mb = sum(t.numel() * t.element_size() for t in state.values()) / 2**20
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        copied = {k: v.clone() for k, v in state.items()}
        times.append(time.perf_counter() - started)
    del copied, torch
    return statistics.median(times), size_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per stage (first of each is dropped)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from learner.main import run
    from protos import load_config

    out = tempfile.mkdtemp(prefix="bench-run-")
    cfg = load_config(None, [
        f"score.stage1_steps={args.steps}", f"score.stage2_steps={args.steps}", "task.eval_size=32",
        f"output_dir={out}", *args.overrides,
    ])
    run(cfg)
    (run_dir,) = [d for d in Path(out).iterdir() if (d / "summary.json").exists()]  # not the registry's .redis/
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    steady = [r for r in train if r["step"] not in (1, args.steps + 1)]
    med = lambda key: statistics.median(r[key] for r in steady)  # noqa: E731
    copy_s, size_mb = in_memory_copy_s(json.loads((run_dir / "summary.json").read_text())["base_model"])

    print(f"\nRL step, default config ({cfg.score.prompts_per_step} prompts x {cfg.score.samples_per_prompt} samples, "
          f"engine={cfg.cluster.engine}), median of {len(steady)} steps:")
    rows = [
        ("step", med("step_s")), ("  rollout (both attempts)", med("rollout_s")), ("  grading", med("grading_s")),
        ("  learner (fwd+bwd+Adam)", med("learner_s")), ("  weight sync", med("sync_s")),
        ("reference scoring (rollout)", med("reference_s")),
    ]
    for name, seconds in rows:
        print(f"  {name:<28}{seconds * 1000:9.1f} ms")
    print(f"  {'rollout tokens/s':<28}{med('rollout_tokens_per_s'):9.0f}")
    print(f"  {'learner tokens/s':<28}{med('learner_tokens_per_s'):9.0f}")
    print(f"  weight sync {med('sync_s') * 1000:.1f} ms vs one in-memory copy of the same {size_mb:.1f} MiB "
          f"state dict {copy_s * 1000:.2f} ms: ratio {med('sync_s') / copy_s:.0f}x")


if __name__ == "__main__":
    main()
