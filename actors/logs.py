"""Actor processes print through Ray to the driver: keep library progress bars out of run output."""


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
