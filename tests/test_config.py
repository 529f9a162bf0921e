import subprocess
import sys

import pytest

from protos import ConfigError, RunConfig, dump_config, load_config


def test_defaults_are_valid_and_yaml_round_trips(tmp_path):
    cfg = load_config()
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("score:\n  alpha: 5\n  beta2: 0.25\ntask:\n  params: {max_len: 9}\n")
    cfg = load_config(path, ["score.alpha=3", "cluster.engine=vllm"])
    assert (cfg.score.alpha, cfg.score.beta2, cfg.task.params, cfg.cluster.engine) == (3, 0.25, {"max_len": 9}, "vllm")


def test_unknown_key_is_named_with_the_keys_allowed_there(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("score:\n  alfa: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "score.alfa: unknown key" in msg and "alpha" in msg and str(path) in msg


def test_bad_values_name_key_value_and_rule():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["score.samples_per_prompt=1", "cluster.engine=tpu"])
    msg = str(err.value)
    assert "score.samples_per_prompt: got 1" in msg and "greater than or equal to 2" in msg
    assert "cluster.engine: got 'tpu'" in msg and "'vllm' or 'transformers'" in msg


def test_head_dim_below_32_is_refused():
    with pytest.raises(ConfigError, match="head_dim of at least 32"):
        load_config(overrides=["model.hidden_size=128", "model.num_heads=8"])


@pytest.mark.parametrize(
    "text, fragment", [("- a\n- b\n", "must hold a mapping"), ("score: [1,\n", "not valid YAML")]
)
def test_malformed_files(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/run.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(overrides=["score.alpha"])


def test_protos_import_without_torch():
    code = "import sys, protos; protos.load_config(); assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_run_config_is_strict_at_every_level():
    with pytest.raises(Exception):
        RunConfig.model_validate({"nonsense": 1})


def test_readme_config_reference_is_current():
    from pathlib import Path

    from protos.reference import reference

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert reference() in readme, "README's configuration reference is stale: paste `python -m protos.reference`"


def test_every_shipped_run_config_validates():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "cluster" / "configs").glob("*.yaml"))
    assert configs, "cluster/configs/ holds no run config"
    for path in configs:
        load_config(path)
