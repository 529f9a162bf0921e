"""Rollout engines compared: vLLM against the transformers fallback, same weights, same process.

Four tables, no pass/fail:
  1. sampling throughput, 64 prompts x 64 new tokens, on the default tiny model and a ~40M one, in
     float32 (what the learner computes in; bfloat16 was slower on this CPU): vLLM eager and
     compiled against transformers' `model.generate` and our transformers engine, in turns;
  2. attempt 2 of SCoRe (prompt = attempt-1 prompt + attempt 1 + instruction) with vLLM's
     prefix cache on and off;
  3. both attempts of a default training batch (the default base, the built-in task: attempt 2's
     prompt is shorter than 128 tokens) with the CPU build's KV blocks of 32 tokens (VLLMEngine's
     choice) and its default 128, in turns: only whole blocks are cached;
  4. the time to load a new state dict in place, against its size.

    python benchmarks/bench_engines.py [--sizes tiny,40M] [--repeats 3] [key=value ...]

Trailing key=value pairs go to every VLLMEngine (e.g. max_num_seqs=64 block_size=64), so knobs
can be tried without editing anything. The machine's other load shows up in the numbers: on a
shared 2-core box, run it alone and compare columns of one run, not runs.
"""
from __future__ import annotations

import argparse
import ast
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.engines.base import SamplingParams  # noqa: E402
from actors.engines.hf_engine import TransformersEngine  # noqa: E402
from actors.engines.vllm_engine import VLLMEngine  # noqa: E402
from graders.registry import make_task  # noqa: E402
from learner.model.tiny import build_untrained  # noqa: E402
from protos.config import ModelConfig  # noqa: E402

SIZES = {
    "tiny": ModelConfig(),
    "40M": ModelConfig(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=2048),
}
VLLM_VARIANTS = {
    "vllm_eager": {},
    "vllm_compiled": {"enforce_eager": False},
}
NUM_PROMPTS, PROMPT_LEN, NEW_TOKENS = 64, 32, 64
SAMPLING = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=1.0, seed=0)
# attempt 2: 16 problems x k=4 samples; a problem longer than a KV block (128 tokens by default),
# since only whole blocks are cached
PROBLEMS, K, PROBLEM_LEN, INSTRUCTION_LEN = 16, 4, 256, 24


def best_seconds(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def hf_generate(model, prompts: list[list[int]]) -> int:
    """transformers' own `model.generate` on the same batch (all prompts have one length: no padding)."""
    ids = torch.tensor(prompts)
    torch.manual_seed(SAMPLING.seed)
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=SAMPLING.temperature, top_k=0,
        max_new_tokens=SAMPLING.max_new_tokens, pad_token_id=0,
    )
    return int((out[:, ids.shape[1]:] != 0).sum())


def interleaved_tokens_per_second(contenders: dict, repeats: int) -> dict[str, float]:
    """Best tokens/s of each contender (name -> call returning tokens generated), measured in turns
    so that a busy machine slows every contender alike and the ratios stay meaningful."""
    for call in contenders.values():
        call()  # warm-up
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(repeats):
        for name, call in contenders.items():
            started = time.perf_counter()
            tokens = call()
            best[name] = max(best[name], tokens / (time.perf_counter() - started))
    return best


def second_attempt_seconds(engine, vocab: int, repeats: int) -> float:
    """Attempt 1 then attempt 2 as the rollout does them; times attempt 2 only."""
    rng = np.random.default_rng(1)
    problems = [rng.integers(2, vocab, PROBLEM_LEN).tolist() for _ in range(PROBLEMS)]
    instruction = rng.integers(2, vocab, INSTRUCTION_LEN).tolist()

    def attempt2_after_attempt1():
        first_prompts = [p for p in problems for _ in range(K)]
        first = engine.generate(first_prompts, SAMPLING)
        second_prompts = [x1 + y1.token_ids + instruction for x1, y1 in zip(first_prompts, first)]
        started = time.perf_counter()
        engine.generate(second_prompts, SAMPLING)
        return time.perf_counter() - started

    return min(attempt2_after_attempt1() for _ in range(repeats))


def bench_size(name: str, cfg: ModelConfig, workdir: Path, repeats: int, vllm_kwargs: dict) -> dict:
    model_dir = build_untrained(cfg, make_task("sort", {}), workdir / name)
    hf = TransformersEngine.from_pretrained(model_dir)
    state_dict = {k: v.clone() for k, v in hf.model.state_dict().items()}
    vocab = hf.model.config.vocab_size
    prompts = np.random.default_rng(0).integers(2, vocab, (NUM_PROMPTS, PROMPT_LEN)).tolist()
    row = {
        "model": name,
        "params_M": sum(p.numel() for p in hf.model.parameters()) / 1e6,
        "state_MB": sum(t.numel() * t.element_size() for t in state_dict.values()) / 1e6,
        "hf_update_s": best_seconds(repeats, lambda: hf.update_weights(1, state_dict)),
    }

    def with_engine(measure, **kwargs):
        engine = VLLMEngine(model_dir, **{**vllm_kwargs, **kwargs})
        try:
            return measure(engine)
        finally:
            del engine
            gc.collect()

    def count(engine):
        return lambda: sum(len(g.token_ids) for g in engine.generate(prompts, SAMPLING))

    # each vLLM variant against both transformers baselines, in turns, all float32
    for variant, kwargs in VLLM_VARIANTS.items():
        best = with_engine(
            lambda e: interleaved_tokens_per_second(
                {"vllm": count(e), "engine": count(hf), "generate": lambda: hf_generate(hf.model, prompts)}, repeats
            ),
            **kwargs,
        )
        row[variant] = best["vllm"]
        row[f"{variant}_vs_engine"] = best["vllm"] / best["engine"]
        row[f"{variant}_vs_generate"] = best["vllm"] / best["generate"]
        row["hf_fp32"] = max(row.get("hf_fp32", 0.0), best["engine"])
        row["hf_generate"] = max(row.get("hf_generate", 0.0), best["generate"])
    del hf
    row["vllm_update_s"] = with_engine(lambda e: best_seconds(repeats, lambda: e.update_weights(1, state_dict)))
    for caching in ("on", "off"):
        row[f"cache_{caching}_s"] = with_engine(
            lambda e: second_attempt_seconds(e, vocab, repeats), enable_prefix_caching=caching == "on"
        )
    return row


def two_attempts_by_block_size(repeats: int, blocks=(128, 32)) -> dict[int, float]:
    """Best seconds to sample both attempts of a default training batch (the default base, 32
    problems of the built-in task x 4 samples, 48 new tokens, T=1) with each KV block size, the
    engines side by side and called in turns."""
    from actors.turns import Turns
    from learner.model.warmstart import ensure_base_model
    from protos import load_config

    task = make_task("sort")
    model_dir = ensure_base_model(load_config(), task, log=lambda _: None)
    engines = {block: VLLMEngine(model_dir, block_size=block) for block in blocks}
    turns = Turns(engines[blocks[0]].tokenizer, task)
    first_prompts = [turns.first(p) for p in task.train_problems(32, np.random.default_rng(0)) for _ in range(4)]
    params = SamplingParams(max_new_tokens=48, temperature=1.0, seed=0)

    def both_attempts(engine) -> None:
        first = engine.generate(first_prompts, params)
        engine.generate([turns.second(x, g.token_ids) for x, g in zip(first_prompts, first)], params)

    for engine in engines.values():
        both_attempts(engine)  # warm-up
    best = dict.fromkeys(blocks, float("inf"))
    for _ in range(repeats):
        for block, engine in engines.items():
            best[block] = min(best[block], best_seconds(1, lambda: both_attempts(engine)))
    return best


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    print("  ".join(f"{header:>14}" for header, _, _ in columns))
    for row in rows:
        print("  ".join(f"{row[key]:>14{fmt}}" for _, key, fmt in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("vllm_kwargs", nargs="*", help="key=value passed to VLLMEngine")
    args = parser.parse_args()
    vllm_kwargs = {key: ast.literal_eval(value) for key, value in (kv.split("=", 1) for kv in args.vllm_kwargs)}

    print(f"torch threads {torch.get_num_threads()}, extra VLLMEngine kwargs: {vllm_kwargs or 'none'}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            rows.append(bench_size(name, SIZES[name], Path(tmp), args.repeats, vllm_kwargs))
    for row in rows:
        row["cache_speedup"] = row["cache_off_s"] / row["cache_on_s"]

    print_table(
        f"Sampling throughput, float32, tokens/s: {NUM_PROMPTS} prompts x {PROMPT_LEN} tokens, {NEW_TOKENS} new, "
        "T=1 (best of interleaved repeats; ratios are against the transformers baselines measured in the same turns)",
        rows,
        [("model", "model", "s"), ("params (M)", "params_M", ".1f"),
         ("HF generate", "hf_generate", ".0f"), ("HF engine", "hf_fp32", ".0f"),
         ("vLLM eager", "vllm_eager", ".0f"), ("/generate", "vllm_eager_vs_generate", ".2f"),
         ("/engine", "vllm_eager_vs_engine", ".2f"),
         ("vLLM compiled", "vllm_compiled", ".0f"), ("/generate", "vllm_compiled_vs_generate", ".2f"),
         ("/engine", "vllm_compiled_vs_engine", ".2f")],
    )
    print_table(
        f"vLLM attempt 2, seconds: {PROBLEMS} problems x k={K}, prompt = {PROBLEM_LEN}-token problem + "
        f"attempt 1 + {INSTRUCTION_LEN}-token instruction, {NEW_TOKENS} new tokens",
        rows,
        [("model", "model", "s"), ("cache off", "cache_off_s", ".2f"), ("cache on", "cache_on_s", ".2f"),
         ("speed-up", "cache_speedup", ".2f")],
    )
    blocks = two_attempts_by_block_size(args.repeats)
    print_table(
        "vLLM, both attempts of a default training batch (default base, 32 problems x 4, 48 new tokens), seconds, "
        "by KV block size (best of interleaved repeats)",
        [{"blocks": f"{blocks[128]:.2f}", "small": f"{blocks[32]:.2f}", "speedup": blocks[128] / blocks[32]}],
        [("blocks of 128", "blocks", "s"), ("blocks of 32", "small", "s"), ("speed-up", "speedup", ".2f")],
    )
    print_table(
        "Weight update in place, seconds",
        rows,
        [("model", "model", "s"), ("state dict MB", "state_MB", ".1f"), ("HF", "hf_update_s", ".3f"),
         ("vLLM", "vllm_update_s", ".3f")],
    )


if __name__ == "__main__":
    main()
