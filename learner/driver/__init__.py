"""The run's driver: the training loop, its backends, the trace buffer, placement, start-up."""
