"""This project against TRL's GRPOTrainer on the same two-attempt work, in one invocation.

    pip install -e ".[bench]"          # TRL; `make bench` does it (torch stays the pinned CPU build)
    python benchmarks/bench_trl.py [--steps N] [--rounds R]

Same base model (the default cached warm-start), same task, same batch (32 prompts x 4 samples,
two attempts each, temperature 1, 48 new tokens per attempt), lr 3e-4, KL weight 0.01, float32,
two cores, no vLLM in the in-process rows. TRL samples through a `rollout_func` that does what
this project's single-turn RL step does: attempt 1, the self-correction instruction, attempt 2, with
the same KV-cached transformers decoding loop (TransformersEngine), rewarded on attempt 1; it
trains on the whole sequence as one completion. Rows, in turns, R rounds:

  trl          GRPOTrainer, 2 torch threads
  single_turn  this project in one process (the experiment suite's backend), 2 threads, lag 0
  score        the same, SCoRe Stage I
  ray_vllm     this project as `make run` runs it: Ray, vLLM rollouts, lag 1, one thread per role,
               the reference model scoring traces on the rollout actor (cluster.reference_on=rollout)
  ray_ref_lrn  the same with the reference on the learner (cluster.reference_on=learner)

Per row: seconds per step, sampled tokens (both attempts) per second of step time, learner tokens
(the sampled tokens trained on; TRL also trains on the 22 instruction tokens between the
attempts) per second of learner time, and each ratio to TRL in the same round. The first two steps of each
run are not counted (start-up, warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS, K, NEW_TOKENS, LR, BETA, THREADS = 32, 4, 48, 3e-4, 0.01, 2
WARMUP = 2


def base_model() -> str:
    from graders.registry import make_task
    from learner.driver.startup import log
    from learner.model.warmstart import ensure_base_model
    from protos import load_config

    return str(ensure_base_model(load_config(), make_task("sort"), log))


def trl_run(base_dir: str, steps: int) -> list[dict]:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from actors.engines.base import SamplingParams
    from actors.engines.hf_engine import TransformersEngine
    from actors.turns import Turns
    from graders.registry import make_task

    torch.set_num_threads(THREADS)
    task = make_task("sort")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    turns = Turns(tokenizer, task)
    problems = task.train_problems(PROMPTS * (steps + 1), np.random.default_rng(0))
    by_prompt = {p.prompt: p for p in problems}
    timing: dict[str, float] = {}

    def rollout_func(prompts: list[str], trainer) -> dict:
        started = time.perf_counter()
        engine = TransformersEngine(trainer.model, tokenizer)
        params = SamplingParams(NEW_TOKENS, 1.0, seed=len(timing))
        # one row per sample: TRL's sampler has already repeated each prompt num_generations times
        firsts = [turns.first(by_prompt[p]) for p in prompts]
        attempt1 = engine.generate(firsts, params)
        attempt2 = engine.generate([turns.second(x, g.token_ids) for x, g in zip(firsts, attempt1)], params)
        trainer.model.train()
        completions = [g1.token_ids + turns.instruction_ids + g2.token_ids for g1, g2 in zip(attempt1, attempt2)]
        logprobs = [g1.logprobs + [0.0] * len(turns.instruction_ids) + g2.logprobs for g1, g2 in zip(attempt1, attempt2)]
        timing["generate_s"] = time.perf_counter() - started
        timing["sampled_tokens"] = sum(len(g.token_ids) for g in attempt1 + attempt2)
        timing["learner_tokens"] = timing["sampled_tokens"]  # the sampled tokens it trains on, as the project counts
        return {"prompt_ids": firsts, "completion_ids": completions, "logprobs": logprobs,
                "attempt1": [turns.text(g.token_ids) for g in attempt1]}

    def reward(prompts, completions, attempt1, **_) -> list[float]:
        return [task.grade(by_prompt[p], a).reward for p, a in zip(prompts, attempt1)]

    records: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s = time.perf_counter() - self.started
            records.append({"step_s": step_s, "rollout_s": timing["generate_s"], "learner_s": step_s - timing["generate_s"],
                            "rollout_tokens": timing["sampled_tokens"], "learner_tokens": timing["learner_tokens"]})

    out = tempfile.mkdtemp(prefix="bench-trl-")
    args = GRPOConfig(
        output_dir=out, use_cpu=True, bf16=False, fp16=False, max_steps=steps, learning_rate=LR, beta=BETA,
        temperature=1.0, per_device_train_batch_size=PROMPTS * K, num_generations=K,
        max_completion_length=2 * NEW_TOKENS + len(turns.instruction_ids), logging_steps=1, report_to=[],
        save_strategy="no", seed=0, lr_scheduler_type="constant", warmup_steps=0, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), reward_funcs=reward, args=args,
        train_dataset=Dataset.from_list([{"prompt": p.prompt} for p in problems]), processing_class=tokenizer,
        rollout_func=rollout_func, callbacks=[StepTimer()],
    )
    trainer.train()
    return records


def project_run(base_dir: str, steps: int, method: str) -> list[dict]:
    from common.logs import configure_process
    from graders.registry import make_task
    from learner.driver.local_backend import LocalBackend
    from learner.driver.loop import TrainLoop
    from protos import load_config

    configure_process(THREADS)
    cfg = load_config(None, [
        f"score.method={method}", f"score.stage1_steps={steps}", "score.stage2_steps=0", f"score.lr={LR}",
        f"score.beta1={BETA}", f"model.path={base_dir}", "cluster.max_policy_lag=0",
    ])
    records: list[dict] = []
    backend = LocalBackend(cfg, base_dir)
    try:
        TrainLoop(cfg, make_task("sort"), backend, records.append, lambda _: None).train()
    finally:
        backend.close()
    return records


def ray_run(base_dir: str, steps: int, *overrides: str) -> list[dict]:
    from learner.main import run
    from protos import load_config

    out = tempfile.mkdtemp(prefix="bench-trl-ray-")
    run(load_config(None, [
        f"score.stage1_steps={steps}", "score.stage2_steps=0", "eval.every_steps=0", "task.eval_size=8",
        f"score.lr={LR}", f"score.beta1={BETA}", f"model.path={base_dir}", f"output_dir={out}", *overrides,
    ]))
    (run_dir,) = [d for d in Path(out).iterdir() if (d / "summary.json").exists()]
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def summarise(records: list[dict]) -> dict[str, float]:
    steady = records[WARMUP:]
    wall = sum(r["step_s"] for r in steady)
    return {
        "step_s": wall / len(steady),
        "rollout_s": statistics.mean(r["rollout_s"] for r in steady),
        "learner_s": statistics.mean(r["learner_s"] for r in steady),
        "sampled_tokens": statistics.mean(r["rollout_tokens"] for r in steady),
        "sampled_per_s": sum(r["rollout_tokens"] for r in steady) / wall,
        "learner_per_s": sum(r["learner_tokens"] for r in steady) / sum(r["learner_s"] for r in steady),
    }


def in_subprocess(fn, *args) -> dict[str, float]:
    """Each run in a fresh process: thread settings, torch.distributed and Ray never leak between rows."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_summarised, (fn, *args))


def _summarised(fn, *args) -> dict[str, float]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return summarise(fn(*args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="steps per run (the first two are not counted)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    try:
        import trl  # noqa: F401
    except ImportError:
        print('TRL is not installed: pip install -e ".[bench]" (make bench does it)', file=sys.stderr)
        sys.exit(2)
    base_dir = base_model()
    rows = {
        "trl": (trl_run, base_dir, args.steps),
        "single_turn": (project_run, base_dir, args.steps, "single_turn"),
        "score": (project_run, base_dir, args.steps, "score"),
        "ray_vllm": (ray_run, base_dir, args.steps),
        "ray_ref_lrn": (ray_run, base_dir, args.steps, "cluster.reference_on=learner"),
    }
    results: dict[str, list[dict]] = {name: [] for name in rows}
    for round_ in range(args.rounds):
        for name, (fn, *fn_args) in rows.items():
            print(f"== round {round_ + 1}/{args.rounds}: {name}", flush=True)
            results[name].append(in_subprocess(fn, *fn_args))

    print(f"\nTwo-attempt RL steps, {PROMPTS} prompts x {K} samples, {args.steps - WARMUP} counted steps per run, "
          f"median of {args.rounds} rounds; ratios to TRL in the same round:")
    print(f"{'row':<12} {'s/step':>7} {'x TRL':>6} {'rollout s':>10} {'learner s':>10} {'sampled tok':>12} "
          f"{'sampled tok/s':>14} {'x TRL':>6} {'learner tok/s':>14} {'x TRL':>6}")
    for name, runs in results.items():
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        ratio = lambda key: statistics.median(r[key] / t[key] for r, t in zip(runs, results["trl"]))  # noqa: E731
        print(f"{name:<12} {med('step_s'):7.2f} {ratio('step_s'):5.2f}x {med('rollout_s'):10.2f} {med('learner_s'):10.2f} "
              f"{med('sampled_tokens'):12.0f} {med('sampled_per_s'):14.0f} {ratio('sampled_per_s'):5.2f}x "
              f"{med('learner_per_s'):14.0f} {ratio('learner_per_s'):5.2f}x")


if __name__ == "__main__":
    main()
