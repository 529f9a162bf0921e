import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def sort_task():
    from graders.registry import make_task

    return make_task("sort", {})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, sort_task):
    """A randomly initialised tiny Qwen2 + tokenizer on disk (no training: seconds to build)."""
    from learner.model.tiny import build_untrained
    from protos.config import ModelConfig

    return build_untrained(ModelConfig(num_layers=2), sort_task, tmp_path_factory.mktemp("tiny"), seed=0)
