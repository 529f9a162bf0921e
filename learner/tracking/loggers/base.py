"""What an experiment tracker is to a run, and the registry of them (as verl's `trainer.logger`).

A tracker is opened once the run directory exists (it gets the resolved config as
hyperparameters), then gets every record the run writes to metrics.jsonl, then the final table.
Each backend imports its package when it is opened, not before: none is a dependency of the
project, each is an extra (`pip install -e '.[trackers]'`).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from protos import RunConfig

LOGGERS: dict[str, type["Logger"]] = {}


class LoggerUnavailable(RuntimeError):
    """A configured tracker whose package is missing, or that fails to start."""


def register_logger(name: str, package: str, requirement: str) -> Callable[[type["Logger"]], type["Logger"]]:
    """Class decorator: `name` is what tracking.loggers lists, `package` what it imports, `requirement`
    what pip installs (the trackers extra in pyproject.toml lists the same)."""
    def wrap(cls: type[Logger]) -> type[Logger]:
        cls.name, cls.package, cls.requirement = name, package, requirement
        LOGGERS[name] = cls
        return cls
    return wrap


def require(name: str):
    """The package tracker `name` needs, imported; LoggerUnavailable naming the key and the install command if missing."""
    package = LOGGERS[name].package
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise LoggerUnavailable(
            f"tracking.loggers lists {name}, but {package} cannot be imported ({exc}). Install the trackers extra: "
            f".venv/bin/pip install -e '.[trackers]' (or pip install {LOGGERS[name].requirement}), or remove {name} "
            "from tracking.loggers"
        ) from None


def scalars(record: dict) -> dict[str, float]:
    """A metrics.jsonl record's numbers as tracker metrics: `<kind>/<key>` (train/reward_t1, eval/acc_t1).
    The step is the x-axis, not a metric; strings (kind, method) are not metrics."""
    return {f"{record['kind']}/{key}": float(value) for key, value in record.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}


def flat_config(cfg: RunConfig) -> dict[str, object]:
    """The resolved config as dotted keys (score.alpha, cluster.max_policy_lag): trackers' hyperparameters."""
    flat: dict[str, object] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value and key != "params":
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value
    walk(cfg.model_dump(mode="json"), "")
    return flat


class Logger:
    """One tracker. Subclasses open it in __init__ (raising if they cannot) and implement the rest."""

    name: str
    package: str
    requirement: str  # what `pip install` takes

    def __init__(self, cfg: RunConfig, run_dir: Path, run_id: str):
        raise NotImplementedError

    def log(self, record: dict) -> None:
        """One record of metrics.jsonl, at its step."""
        raise NotImplementedError

    def finish(self, table: str, rows: dict[str, dict[str, float]]) -> None:
        """The run is over: the final evaluation table (as printed) and its rows; flush and close."""
        raise NotImplementedError

    def close(self) -> None:
        """The run failed or was stopped: flush and close, marked so where the tracker has a status."""
        raise NotImplementedError
