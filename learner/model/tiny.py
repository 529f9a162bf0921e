"""Build a tokenizer and a small Qwen2 causal LM locally, with no download.

The directory written here is a plain Hugging Face model directory (config, safetensors,
tokenizer), so transformers and vLLM load the same files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import json

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from graders.base import Task
from protos.config import ModelConfig

EOS, PAD = "<|endoftext|>", "<|pad|>"


def build_tokenizer(task: Task, vocab_size: int, seed: int = 0) -> Qwen2Tokenizer:
    """Byte-level BPE trained on the task's own text: any string encodes, common ones stay short.

    transformers (and so vLLM) load a qwen2 model's tokenizer as Qwen2Tokenizer, which imposes its
    own normaliser and pre-tokeniser (one token per digit). Training under exactly those and
    returning a Qwen2Tokenizer makes the in-memory, reloaded and served tokenisations identical.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(task.corpus(4000, np.random.default_rng(seed)), trainer=trainer)
    bpe = json.loads(tok.to_str())["model"]
    return Qwen2Tokenizer(vocab=bpe["vocab"], merges=[tuple(m) for m in bpe["merges"]], eos_token=EOS, pad_token=PAD, unk_token=EOS)


def build_model(cfg: ModelConfig, tokenizer: Qwen2Tokenizer, seed: int = 0) -> Qwen2ForCausalLM:
    import torch

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def build_untrained(cfg: ModelConfig, task: Task, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised model and its tokenizer to `out_dir`."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(task, cfg.vocab_size, seed)
    model = build_model(cfg, tokenizer, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
