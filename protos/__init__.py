"""Messages and configuration shared across actor boundaries. Imports numpy, pydantic and yaml only."""
from protos.batch import ATTEMPT1, ATTEMPT2, CONTEXT, TraceBatch
from protos.config import ConfigError, RunConfig, dump_config, load_config
from protos.messages import Grade, GradeStatus, PolicyVersion, Problem, TraceMeta

__all__ = [
    "ATTEMPT1", "ATTEMPT2", "CONTEXT", "TraceBatch", "ConfigError", "RunConfig", "dump_config",
    "load_config", "Grade", "GradeStatus", "PolicyVersion", "Problem", "TraceMeta",
]
