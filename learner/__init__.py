"""The driver side of a run, and its commands.

    python -m learner.main        train (Stage I, then Stage II) and evaluate, on Ray
    python -m learner.experiment  the experiment suite: methods x seeds, in-process, side by side
    python -m learner.runs        list and show runs in the run registry

    driver/    the training loop and its two backends (Ray actors, or in-process), the trace
               buffer, placement of actor groups, start-up checks, the self-correction metrics
    training/  the learner: FSDP2 ranks (worker), their Ray group, the Stage I / II losses
    tracking/  run directory, run registry in Redis (and its embedded redis-server)
    model/     the tiny local model and its supervised warm-start into a base policy
"""
