"""Process set-up shared by every actor: thread count and quiet library logging.

Actor processes print through Ray to the driver: library progress bars and per-call warnings would
bury the run's own progress lines.
"""


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
