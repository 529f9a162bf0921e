"""Models and trace batches of a given shape with random contents: for measuring the learner
(benchmarks/bench_learner.py) and testing it where no rollout engine runs (tests/test_learner_devices.py:
the GPU machines it is checked on have neither vLLM nor Ray).

A batch is what a rollout actor sends (protos/batch.py): rows [x1, y1, p, y2], groups of k samples
per prompt, the engine's log-probs of the sampled tokens, and the reference's log-probs (the
default `cluster.reference_on=rollout`, so the learner holds no reference model).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from protos import TraceBatch

# Qwen2 shapes: "tiny" is about the default base's size; "0.5b" is Qwen2.5-0.5B's (494M parameters,
# grouped-query attention with 2 KV heads, tied embeddings, its 151,936-token vocabulary)
SHAPES = {
    "tiny": dict(vocab_size=2048, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4),
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2),
}


def write_model(shape: str, out_dir: str | Path, seed: int = 0) -> Path:
    """A randomly initialised Qwen2 causal LM of `shape` (SHAPES), saved as a Hugging Face directory."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=True,
                         rope_theta=1_000_000.0, eos_token_id=0, bos_token_id=0, pad_token_id=1)
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    return Path(out_dir)


def random_batch(rng: np.random.Generator, vocab_size: int, prompts: int, k: int, prompt_tokens: int,
                 attempt_tokens: int, instruction_tokens: int = 16) -> tuple[TraceBatch, np.ndarray]:
    """`prompts` x `k` traces with lengths drawn between half the given maxima and them, and their
    rewards (float [n, 2], each 0 or 1 at random)."""
    n = prompts * k
    draw = lambda most: int(rng.integers(most // 2, most + 1))  # noqa: E731
    tokens = lambda length: rng.integers(2, vocab_size, length).tolist()  # noqa: E731
    logprobs = lambda length: (-rng.exponential(1.0, length)).tolist()  # noqa: E731
    group_prompts = [tokens(draw(prompt_tokens)) for _ in range(prompts)]
    firsts = [tokens(draw(attempt_tokens)) for _ in range(n)]
    seconds = [tokens(draw(attempt_tokens)) for _ in range(n)]
    batch = TraceBatch.from_parts(
        np.repeat(np.arange(prompts), k), [group_prompts[i // k] for i in range(n)], firsts,
        tokens(instruction_tokens), seconds, [logprobs(len(y)) for y in firsts], [logprobs(len(y)) for y in seconds],
        pad_id=1,
    )
    batch.ref_logprobs = np.where(batch.segment > 0, -rng.exponential(1.0, batch.tokens.shape), 0.0).astype(np.float32)
    return batch, rng.integers(2, size=(n, 2)).astype(np.float32)
