"""The learner's training step alone: tokens per second and model FLOPs utilisation (MFU).

One FSDP2 rank (LearnerWorker, world size 1) trains Stage II steps on random batches of a fixed
shape (learner/training/synthetic.py), with the reference log-probs in the batch as the rollout
actors send them. Two warm-up steps, then `--steps` timed ones; no pass/fail.

    python benchmarks/bench_learner.py                      # CPU: the tiny shape, float32 (make bench)
    python benchmarks/bench_learner.py --shape 0.5b --device cuda --dtype bfloat16 --peak-tflops 989

Tokens are the rows' real tokens (prompt, both attempts, the instruction; not padding). Model FLOPs
per token follow the usual count (PaLM's appendix B, as torchtitan and verl count them): 6 x the
parameters of the transformer blocks, plus causal attention's 6 x layers x hidden x context, plus the
output head's 6 x hidden x vocabulary only for the tokens it scores (token_logprobs runs the head on
the sampled tokens alone). MFU = those FLOPs / step time / `--peak-tflops` (dense bf16 peak: 989 for
an H100 or H200 SXM); not printed without it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.ports import free_port  # noqa: E402
from learner.training.losses import Objective  # noqa: E402
from learner.training.synthetic import SHAPES, random_batch, write_model  # noqa: E402
from learner.training.worker import LearnerWorker  # noqa: E402


def model_flops(shape: dict, lengths: np.ndarray, scored_tokens: int, block_params: int) -> float:
    """Forward + backward FLOPs of one step on rows of `lengths` (see the module's docstring)."""
    tokens = float(lengths.sum())
    context = float((lengths * (lengths - 1) / 2).sum())  # sum over tokens of the positions each attends to
    attention = 6 * shape["num_hidden_layers"] * shape["hidden_size"] * 2 * context  # QK^T and AV
    head = 6 * shape["hidden_size"] * shape["vocab_size"] * scored_tokens
    return 6 * block_params * tokens + attention + head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step (default: 64 on cuda, 8 on cpu)")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="longest prompt (default: 256 on cuda, 64 on cpu)")
    parser.add_argument("--attempt-tokens", type=int, default=None, help="longest attempt (default: 256 on cuda, 32 on cpu)")
    parser.add_argument("--micro-batch-tokens", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak, for MFU")
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    prompts = args.prompts or (64 if on_gpu else 8)
    prompt_tokens = args.prompt_tokens or (256 if on_gpu else 64)
    attempt_tokens = args.attempt_tokens or (256 if on_gpu else 32)

    shape = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_model(args.shape, tmp)
        worker = LearnerWorker(tmp, 0, 1, f"tcp://127.0.0.1:{free_port()}", lr=1e-6, grad_clip=1.0, temperature=1.0,
                               backend="nccl" if on_gpu else "gloo", micro_batch_tokens=args.micro_batch_tokens,
                               reference=False, dtype=args.dtype)
        print(f"{args.shape} model built and sharded on {worker.device} in {time.perf_counter() - started:.1f}s", flush=True)
    params = sum(p.numel() for p in worker.model.parameters())
    embedding = shape["vocab_size"] * shape["hidden_size"]  # tied: the head's weights too
    rng = np.random.default_rng(0)
    objective = Objective(stage=2, alpha=10, beta1=0.01, beta2=0.25)
    step_seconds, flops, tokens = [], [], []
    for step in range(2 + args.steps):
        batch, rewards = random_batch(rng, shape["vocab_size"], prompts, args.k, prompt_tokens, attempt_tokens)
        if on_gpu:
            torch.cuda.synchronize()
        began = time.perf_counter()
        stats = worker.train_step(objective, rewards, batch)
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        kind = "warm-up" if step < 2 else "timed"
        print(f"step {step + 1} ({kind}): {seconds:.2f}s, {int(batch.lengths.sum())} tokens, "
              f"loss {stats['policy_loss']:+.4f}, grad norm {stats['grad_norm']:.3f}", flush=True)
        if step >= 2:
            step_seconds.append(seconds)
            tokens.append(float(batch.lengths.sum()))
            flops.append(model_flops(shape, batch.lengths, int((batch.segment > 0).sum()), params - embedding))
    total_s = sum(step_seconds)
    print(f"\n{args.shape} ({params / 1e6:.0f}M parameters), {args.device}, {args.dtype}, {len(batch)} traces "
          f"({prompts} prompts x {args.k}), micro-batches of {args.micro_batch_tokens} tokens")
    print(f"step time {np.mean(step_seconds):.2f}s (min {min(step_seconds):.2f}), {sum(tokens) / total_s:,.0f} tokens/s, "
          f"{sum(flops) / total_s / 1e12:.3g} model TFLOP/s", end="")
    if args.peak_tflops:
        print(f", MFU {sum(flops) / total_s / 1e12 / args.peak_tflops:.1%} of {args.peak_tflops:g}", end="")
    if on_gpu:
        print(f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", end="")
    print()
    worker.close()


if __name__ == "__main__":
    main()
