"""What to serve: a run directory's final checkpoint with its task, or any Hugging Face directory.

A run directory (learner/main.py lays it out) holds config.yaml, the run's config, and checkpoint/,
the trained policy with its tokenizer. The config names the task, whose instruction is the
self-correction turn the policy was trained with, and score.max_new_tokens, the attempt length it
was trained at (the default max_tokens here).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from protos import load_config
from protos.config import ScoreConfig


@dataclass(frozen=True)
class ServedModel:
    model_dir: Path  # the Hugging Face directory the engine loads
    name: str  # the `model` a request names
    task_name: str
    task_params: dict
    max_tokens: int  # a request's default max_tokens
    context: int  # the longest sequence the model takes: every attempt of a request together


def resolve(path: str | Path, task: str | None = None, name: str | None = None) -> ServedModel:
    """`path` is a run directory, its checkpoint/, or a Hugging Face directory. `task` is needed only for
    the last (default sort), and must agree with a run's own."""
    path = Path(path).resolve()
    run = path if (path / "config.yaml").is_file() else None
    if path.name == "checkpoint" and (path.parent / "config.yaml").is_file():
        run = path.parent
    if run is not None:
        cfg = load_config(run / "config.yaml", check_paths=False)  # the paths were the training machine's
        model_dir = run / "checkpoint"
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{run} is a run directory without a final checkpoint ({model_dir}): the run has not finished")
        if task is not None and task != cfg.task.name:
            raise ValueError(f"task {task!r} given, but run {run.name} trained on task {cfg.task.name!r}")
        task_name, task_params, max_tokens, default_name = cfg.task.name, dict(cfg.task.params), cfg.score.max_new_tokens, run.name
    else:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is neither a run directory (config.yaml) nor a Hugging Face directory (config.json)")
        model_dir, task_name, task_params = path, task or "sort", {}
        max_tokens, default_name = ScoreConfig().max_new_tokens, path.name
    context = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    return ServedModel(model_dir, name or default_name, task_name, task_params, max_tokens, context)
