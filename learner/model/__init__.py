"""The locally built tiny model and its warm-start (stage 0) into the base policy."""
