"""A run's directory: resolved config, metrics JSONL, resumable checkpoints, the final checkpoint,
plot, and a summary written last.

`summary.json` exists only for a run that finished; a failed run gets `FAILED` with the reason
instead, so nothing half-written ever looks complete.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from protos import RunConfig, dump_config


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.metrics_path = self.path / "metrics.jsonl"
        self.records_written = len(self.records())

    @classmethod
    def create(cls, cfg: RunConfig, base: dict[str, str]) -> "RunDir":
        """A new directory <output_dir>/<name>-<timestamp> holding the resolved config, headed by the
        base model it trains (`base`: its directory and content hash)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(cfg.output_dir) / f"{cfg.name}-{stamp}"
        suffix = 1
        while path.exists():
            path = Path(cfg.output_dir) / f"{cfg.name}-{stamp}-{suffix}"
            suffix += 1
        path.mkdir(parents=True)
        write_config(path, cfg, base)
        return cls(path)

    @classmethod
    def reopen(cls, path: Path, cfg: RunConfig, records_kept: int, attempt: int, base: dict[str, str]) -> "RunDir":
        """A stopped run's directory, to continue from a checkpoint: metrics.jsonl cut back to the
        `records_kept` records the checkpoint had seen (later ones will be written again), the
        config as resumed, and the last attempt's FAILED kept as FAILED.<attempt - 1>."""
        run = cls(path)
        run.cut_back(records_kept)
        write_config(run.path, cfg, base)
        if (run.path / "FAILED").exists():
            (run.path / "FAILED").rename(run.path / f"FAILED.{attempt - 1}")
        return run

    def cut_back(self, records_kept: int) -> None:
        """Keep the first `records_kept` lines of metrics.jsonl (those a checkpoint had seen: a run
        continuing from it writes the later ones again). Atomic: replaced by rename."""
        kept = self.metrics_path.read_text().splitlines(keepends=True)[:records_kept] if self.metrics_path.exists() else []
        tmp = self.path / ".metrics.jsonl.tmp"
        tmp.write_text("".join(kept))
        tmp.rename(self.metrics_path)
        self.records_written = len(kept)

    def log_event(self, name: str, event: dict) -> None:
        """One line of `<name>.jsonl` (resumes, recoveries): what happened to the run, with its time."""
        with (self.path / f"{name}.jsonl").open("a") as f:
            f.write(json.dumps({**event, "time": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")

    def events(self, name: str) -> list[dict]:
        file = self.path / f"{name}.jsonl"
        return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    def log_metrics(self, record: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.records_written += 1

    def records(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def finish(self, summary: dict) -> None:
        tmp = self.path / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.rename(self.path / "summary.json")

    def fail(self, reason: str) -> None:
        (self.path / "FAILED").write_text(reason + "\n")


def write_config(path: Path, cfg: RunConfig, base: dict[str, str]) -> None:
    """config.yaml: the resolved config, after comment lines naming the base model (not a config key:
    the config names a recipe or a path, the hash names the weights it gave)."""
    header = "".join(f"# {key}: {value}\n" for key, value in base.items())
    (path / "config.yaml").write_text(header + dump_config(cfg))


def plot_training(records: list[dict], out: Path) -> None:
    """Acc@t1 / Acc@t2 (held-out, greedy) and sampled reward@t1 / @t2 against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (ax_eval, ax_train) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("acc_t1", "Acc@t1"), ("acc_t2", "Acc@t2")):
        ax_eval.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", label=label)
    ax_eval.set(title="held-out accuracy (greedy)", xlabel="RL step", ylabel="%")
    for key, label in (("reward_t1", "reward@t1"), ("reward_t2", "reward@t2")):
        ax_train.plot([r["step"] for r in train], [r[key] for r in train], label=label)
    ax_train.set(title="training reward (sampled)", xlabel="RL step", ylabel="mean reward")
    stage2 = next((r["step"] for r in train if r["stage"] == 2), None)
    for ax in (ax_eval, ax_train):
        if stage2 is not None:
            ax.axvline(stage2 - 0.5, color="grey", linestyle=":", label="Stage II starts")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
