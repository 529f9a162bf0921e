"""The learner proper: one FSDP2 rank (worker), the group of ranks on Ray, the SCoRe losses."""
