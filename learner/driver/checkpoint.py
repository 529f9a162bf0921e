"""Resumable checkpoints: written atomically, checked by content hash, pruned to the last few.

A checkpoint is a directory `<run>/checkpoints/step_000010/` holding
- `learner/`: the policy and the optimizer, sharded as FSDP holds them (torch.distributed.checkpoint:
  each learner rank writes its own shards, so it scales past one node's memory);
- `loop.json`: the training loop's state (step = policy version, the problem sampler's generator,
  the requests already drawn for later steps, counters, how many metrics records were written)
  and the reference model's identity;
- `manifest.json`, written last: every other file's size and SHA-256.

It is built in `.step_000010.tmp/` and renamed into place, so a crash mid-save leaves no directory
that looks like a checkpoint. A checkpoint whose files do not match its manifest (missing,
truncated, changed) is skipped on resume, with the reason logged, for the newest good one. The
final Hugging Face checkpoint of a finished run (`<run>/checkpoint/`) is separate and unchanged.

Rollouts in flight at a checkpoint are deliberately not saved: their requests are (problems and
sampling seed), and a resumed run samples them again with the checkpoint's policy. Saving them
would mean draining the pipeline at every checkpoint (waiting for rollouts still running) and
storing token arrays; re-sampling costs at most cluster.max_policy_lag steps of rollouts, once, and
stays inside the lag bound (the newest weights are never too old). What it changes: with lag 0 a
resumed run takes exactly the steps an uninterrupted one would (tests/test_resume.py checks every
record); with lag L >= 1, the first L steps after a resume train on the same problems sampled by
newer weights than they would have been (their policy_lag is 0), so the run continues from there
on a slightly different path.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MANIFEST, LOOP_STATE, LEARNER = "manifest.json", "loop.json", "learner"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was needed."""


@dataclass
class Checkpoint:
    path: Path
    step: int

    def loop_state(self) -> dict:
        return json.loads((self.path / LOOP_STATE).read_text())

    @property
    def learner_dir(self) -> Path:
        return self.path / LEARNER


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    """The reference model's identity: a hash of its config and weight files' contents."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).iterdir()):
        if path.name == "config.json" or path.suffix in (".safetensors", ".bin"):
            digest.update(f"{path.name}:{file_sha256(path)}".encode())
    return digest.hexdigest()


def save(root: Path, step: int, loop_state: dict, save_learner: Callable[[str], None], keep_last: int) -> Checkpoint:
    """Write step `step`'s checkpoint under `root` (the learner writes its part through
    `save_learner(dir)`), then delete all but the newest `keep_last`."""
    root.mkdir(parents=True, exist_ok=True)
    final, staging = root / f"step_{step:06d}", root / f".step_{step:06d}.tmp"
    shutil.rmtree(staging, ignore_errors=True)  # left by a crash mid-save
    staging.mkdir()
    save_learner(str(staging / LEARNER))
    (staging / LOOP_STATE).write_text(json.dumps(loop_state))
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    manifest = {"step": step, "files": {str(p.relative_to(staging)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                                        for p in files}}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if final.exists():  # the same step saved again (a resumed run that had got past it before dying)
        shutil.rmtree(final)
    staging.rename(final)
    for old in sorted(root.glob("step_*"))[:-keep_last]:
        shutil.rmtree(old)
    return Checkpoint(final, step)


def problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be used (naming the file), or None if it matches its manifest."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{path / MANIFEST} is missing or unreadable ({type(exc).__name__})"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{file} has {file.stat().st_size} bytes, the manifest says {expected['bytes']} (truncated?)"
        if file_sha256(file) != expected["sha256"]:
            return f"{file} does not match its SHA-256 in the manifest (corrupt)"
    return None


def latest(root: Path, log: Callable[[str], None]) -> Checkpoint | None:
    """The newest checkpoint under `root` that matches its manifest; each newer one that does not
    is named with why. None if there are no checkpoints at all; CheckpointError if none is usable."""
    found = sorted(root.glob("step_*"), reverse=True) if root.is_dir() else []
    problems = []
    for path in found:
        why = problem(path)
        if why is None:
            if problems:
                log(f"resuming from the previous good checkpoint, {path.name}")
            return Checkpoint(path, int(path.name.removeprefix("step_")))
        problems.append(why)
        log(f"checkpoint {path.name} is unusable: {why}")
    if problems:
        raise CheckpointError("no usable checkpoint: " + "; ".join(problems))
    return None
