"""Shared pieces of the end-to-end tests: a tiny, fast configuration and a way to run the CLI."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_overrides(tmp: Path) -> list[str]:
    """A full Stage I + Stage II run in well under a minute: small model, a few steps, little data."""
    settings = {
        "output_dir": tmp / "runs",
        "model.cache_dir": tmp / "models",
        "model.num_layers": 2,
        "warmstart.max_steps": 30,
        "warmstart.check_every": 30,
        "score.stage1_steps": 2,
        "score.stage2_steps": 2,
        "score.prompts_per_step": 4,
        "score.samples_per_prompt": 2,
        "score.max_new_tokens": 12,
        "task.eval_size": 8,
    }
    return set_args(settings)


def set_args(settings: dict) -> list[str]:
    """{"a.b": 1} -> ["--set", "a.b=1"]: settings as learner.main's command line takes them."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def run_cli(args: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "learner.main", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
