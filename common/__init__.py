"""What every side of the system shares: metrics recording (`telemetry`), free ports (`ports`) and
process set-up (`logs`). It imports `protos` at most, so rollout actors, graders and the learner
can all import it without importing each other."""
