"""Process set-up shared by every actor: thread count and quiet library logging.

Actor processes print through Ray to the driver: library progress bars and per-call warnings would
bury the run's own progress lines.
"""
import re


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def configure_process(threads: int | None) -> None:
    """What a rollout or learner actor does first: its torch thread count (None: leave it), quiet logs."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    quiet_transformers()


def describe(error: BaseException) -> str:
    """"Type: first line of the message", for a log line or a record (Ray's errors run to pages and
    colour the names in them)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().split("\n", 1)[0][:300].rstrip(".")
    return f"{type(error).__name__}: {text}"
