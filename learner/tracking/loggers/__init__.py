"""Experiment trackers (TensorBoard, Weights & Biases, MLflow), chosen by tracking.loggers.

`check(cfg)` imports the configured trackers' packages before anything starts; `Trackers.open`
starts them once the run directory exists (a tracker that cannot start stops the run there, before
training). Mid-run, a tracker that fails is named in the log and dropped: training goes on, and
metrics.jsonl has every record regardless.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from learner.tracking.loggers import mlflow, tensorboard, wandb  # noqa: F401  (each registers itself)
from learner.tracking.loggers.base import LOGGERS, Logger, LoggerUnavailable, require
from protos import RunConfig


def check(cfg: RunConfig) -> None:
    """Every configured tracker's package imports; LoggerUnavailable naming the first that does not."""
    for name in cfg.tracking.loggers:
        require(name)


class Trackers:
    """The run's trackers, fed like metrics.jsonl."""

    def __init__(self, loggers: list[Logger], log: Callable[[str], None]):
        self.loggers, self.log_line = loggers, log

    @classmethod
    def open(cls, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> "Trackers":
        opened: list[Logger] = []
        for name in dict.fromkeys(cfg.tracking.loggers):  # each once, in the order given
            try:
                opened.append(LOGGERS[name](cfg, Path(run_dir), Path(run_dir).name))
            except LoggerUnavailable:
                cls(opened, log).close()
                raise
            except Exception as exc:  # the tracker's own error, whatever its type: name it and stop here
                cls(opened, log).close()
                raise LoggerUnavailable(f"tracking.loggers: {name} failed to start ({type(exc).__name__}: {exc})") from exc
        if opened:
            log(f"trackers: {', '.join(t.name for t in opened)} (in {run_dir})")
        return cls(opened, log)

    def _each(self, what: str, call: Callable[[Logger], None]) -> None:
        for tracker in list(self.loggers):
            try:
                call(tracker)
            except Exception as exc:
                self.loggers.remove(tracker)
                self.log_line(f"tracker {tracker.name} failed ({what}: {type(exc).__name__}: {exc}); training goes on "
                              "without it (metrics.jsonl has every record)")

    def log(self, record: dict) -> None:
        self._each(f"logging step {record.get('step')}", lambda t: t.log(record))

    def finish(self, table: str, rows: dict[str, dict[str, float]]) -> None:
        self._each("finishing", lambda t: t.finish(table, rows))
        self.loggers = []

    def close(self) -> None:
        """A run that failed or stopped: close what is open, with no final table."""
        self._each("closing", lambda t: t.close())
        self.loggers = []
