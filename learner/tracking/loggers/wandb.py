"""Weights & Biases: offline by default (tracking.wandb_mode, else $WANDB_MODE, else offline), so a
run needs no network or account; its files are in <run_dir>/wandb/offline-run-*, and
`wandb sync <run_dir>/wandb/offline-run-*` uploads them later."""
from __future__ import annotations

import os
from pathlib import Path

from learner.tracking.loggers.base import Logger, register_logger, require, scalars
from protos import RunConfig


@register_logger("wandb", package="wandb", requirement="wandb")
class WandbLogger(Logger):
    def __init__(self, cfg: RunConfig, run_dir: Path, run_id: str):
        wandb = require(self.name)
        mode = cfg.tracking.wandb_mode or os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(project=cfg.tracking.project, name=run_id, dir=str(run_dir), mode=mode,
                              config=cfg.model_dump(mode="json"), reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))

    def log(self, record: dict) -> None:
        self.run.log(scalars(record), step=record["step"])

    def finish(self, table: str, rows: dict[str, dict[str, float]]) -> None:
        for row, metrics in rows.items():
            for key, value in metrics.items():
                self.run.summary[f"final/{row}/{key}"] = value
        self.run.finish()

    def close(self) -> None:
        self.run.finish(exit_code=1)
