"""Stage 0: supervised warm-start of the tiny model into a base policy, cached on disk.

The base must solve the task part of the time, answer the self-correction turn in the right
format, and neither copy attempt 1 nor have been taught to correct it. So the second-turn examples
show, as "attempt 1", the answer to a *different* problem of the task: the model learns the turn's
format and to answer the question asked, and learns nothing about when an attempt is wrong or how
to fix it. Whatever correcting it does later, RL taught it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from actors.engines.base import SamplingParams
from actors.engines.hf_engine import TransformersEngine
from actors.turns import Turns
from graders.base import Task
from learner.model.base import shipped_for
from learner.model.tiny import build_model, build_tokenizer
from protos import RunConfig

RECIPE = "sft-v2"  # bump when the warm-start's data or loop changes, to invalidate caches


def cache_key(cfg: RunConfig) -> str:
    spec = {
        "recipe": RECIPE,
        "model": cfg.model.model_dump(exclude={"path", "cache_dir"}),
        "warmstart": cfg.warmstart.model_dump(),
        "task": {"name": cfg.task.name, "params": cfg.task.params},
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg.task.name}-{digest}"


def sft_example(turns: Turns, eos_id: int, prompt: str, answer: str, shown_attempt: str | None):
    """(tokens, loss_mask) for one example; the loss covers only the final answer and its EOS."""
    encode = turns._encode
    target = encode(answer) + [eos_id]
    context = encode(prompt)
    if shown_attempt is not None:
        context = turns.second(context, encode(shown_attempt) + [eos_id])
    return context + target, [0] * len(context) + [1] * len(target)


def sft_batch(task: Task, turns: Turns, eos_id: int, pad_id: int, n: int, rng: np.random.Generator):
    problems = task.train_problems(2 * n, rng)
    rows = []
    for i in range(n):
        problem, unrelated = problems[i], problems[n + i]
        shown = unrelated.answer if rng.random() < 0.5 else None  # half first turns, half second turns
        rows.append(sft_example(turns, eos_id, problem.prompt, problem.answer, shown))
    width = max(len(t) for t, _ in rows)
    tokens = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width))
    for i, (t, m) in enumerate(rows):
        tokens[i, : len(t)] = torch.tensor(t)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.float)
    return tokens, mask


def first_attempt_accuracy(model, tokenizer, turns: Turns, task: Task, problems: list) -> float:
    """Greedy attempt-1 accuracy (%) of an in-memory model."""
    engine = TransformersEngine(model, tokenizer)
    answers = engine.generate([turns.first(p) for p in problems], SamplingParams(max_new_tokens=64, temperature=0.0))
    correct = [task.grade(p, turns.text(a.token_ids)).reward > 0.5 for p, a in zip(problems, answers)]
    model.train()
    return 100.0 * sum(correct) / len(correct)


def train_sft(model, tokenizer, task: Task, turns: Turns, cfg: RunConfig, log: Callable[[str], None]) -> dict:
    """SFT until greedy attempt-1 accuracy reaches the target (or max_steps).

    Stopping on accuracy rather than a step count keeps the base in the band RL needs (it must be
    wrong often enough to have something to correct) whatever the task: sorting, for one, goes
    from 0% to over 90% within a few hundred steps, so any fixed count is fragile.
    """
    ws = cfg.warmstart
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    rng = np.random.default_rng(ws.seed)
    torch.manual_seed(ws.seed)
    validation = task.train_problems(128, np.random.default_rng(ws.seed + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=ws.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    model.train()
    started, loss_avg, accuracy, step = time.perf_counter(), None, 0.0, 0
    for step in range(1, ws.max_steps + 1):
        tokens, mask = sft_batch(task, turns, eos_id, pad_id, ws.batch_size, rng)
        logits = model(input_ids=tokens, attention_mask=(tokens != pad_id).long() | (mask > 0).long()).logits
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
        )
        loss = (ce * mask[:, 1:].reshape(-1)).sum() / mask[:, 1:].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = loss.item()
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        if step % ws.check_every == 0 or step == ws.max_steps:
            accuracy = first_attempt_accuracy(model, tokenizer, turns, task, validation)
            log(
                f"warm-start step {step}/{ws.max_steps}  loss {loss_avg:.4f}  greedy acc@t1 {accuracy:.1f}% "
                f"(target {ws.target_accuracy:g}%)  {time.perf_counter() - started:.0f}s"
            )
            if accuracy >= ws.target_accuracy:
                break
    model.eval()
    if accuracy < ws.target_accuracy:
        log(f"warm-start: stopped at max_steps={ws.max_steps} with acc@t1 {accuracy:.1f}% below the target")
    return {"steps": step, "final_loss": loss_avg, "train_accuracy_t1": accuracy, "wall_s": time.perf_counter() - started}


def build_base(cfg: RunConfig, task: Task, out: Path, log: Callable[[str], None]) -> None:
    """Build the tokenizer and tiny model and warm-start them into `out` (a Hugging Face model directory)."""
    tokenizer = build_tokenizer(task, cfg.model.vocab_size, cfg.warmstart.seed)
    model = build_model(cfg.model, tokenizer, cfg.warmstart.seed)
    record = train_sft(model, tokenizer, task, Turns(tokenizer, task), cfg, log)
    record["params"] = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "warmstart.json").write_text(json.dumps(record, indent=2))  # written last: marks it complete


def ensure_base_model(cfg: RunConfig, task: Task, log: Callable[[str], None] = print) -> Path:
    """The base policy's directory: cfg.model.path if given; else the base shipped in the repository
    if the config names its recipe (the default config does); else the cached warm-start, built if missing."""
    if cfg.model.path:
        path = Path(cfg.model.path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {path} is not a Hugging Face model directory (no config.json)")
        log(f"base model: {path}")
        return path
    key = cache_key(cfg)
    shipped = shipped_for(key)
    if shipped is not None:
        log(f"base model: the shipped base {key} (learner/model/{shipped.name})")
        return shipped
    final = Path(cfg.model.cache_dir) / key
    if (final / "warmstart.json").is_file():
        log(f"base model: cached warm-start {final}")
        return final
    log(f"base model: warm-starting {final.name} (SFT to {cfg.warmstart.target_accuracy:g}% greedy accuracy; cached for later runs)")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
    try:
        build_base(cfg, task, staging, log)
        try:
            os.replace(staging, final)  # atomic: a crash never leaves a half-built model that looks cached
        except OSError:  # another process finished the same model first; theirs is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
