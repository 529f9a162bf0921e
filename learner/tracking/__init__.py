"""Keeping track of runs: the run directory, and the run registry in Redis."""
