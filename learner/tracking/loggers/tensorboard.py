"""TensorBoard: event files in <run_dir>/tensorboard (`tensorboard --logdir runs`)."""
from __future__ import annotations

from pathlib import Path

from learner.tracking.loggers.base import Logger, register_logger, require, scalars
from protos import RunConfig, dump_config


@register_logger("tensorboard", package="tensorboard", requirement="tensorboard")
class TensorBoardLogger(Logger):
    def __init__(self, cfg: RunConfig, run_dir: Path, run_id: str):
        require(self.name)  # torch's writer needs the tensorboard package; say so in our words if missing
        from torch.utils.tensorboard import SummaryWriter

        self.dir = run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir), flush_secs=10)
        self.writer.add_text("config", _code(dump_config(cfg)), global_step=0)

    def log(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, global_step=record["step"])

    def finish(self, table: str, rows: dict[str, dict[str, float]]) -> None:
        self.writer.add_text("eval/table", _code(table), global_step=0)
        self.close()

    def close(self) -> None:
        self.writer.close()


def _code(text: str) -> str:
    """TensorBoard renders text as Markdown: indent it as a code block so tables and YAML keep their layout."""
    return "\n".join("    " + line for line in text.splitlines())
