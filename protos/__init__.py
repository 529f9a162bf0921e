"""Messages and configuration shared across actor boundaries. Imports numpy, pydantic and yaml only."""
from protos.batch import ATTEMPT1, ATTEMPT2, CONTEXT, BatchInfo, TraceBatch, rewards
from protos.config import ConfigError, RunConfig, dump_config, load_config
from protos.messages import Grade, GradeStatus, Problem, TraceMeta

__all__ = [
    "ATTEMPT1", "ATTEMPT2", "CONTEXT", "BatchInfo", "TraceBatch", "rewards", "ConfigError", "RunConfig",
    "dump_config", "load_config", "Grade", "GradeStatus", "Problem", "TraceMeta",
]
