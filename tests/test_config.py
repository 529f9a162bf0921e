import os
import subprocess
import sys

import pytest

from protos import ConfigError, RunConfig, dump_config, load_config


def refused(overrides: list[str], message: str) -> None:
    """load_config(overrides=...) raises a ConfigError saying `message` (plain text: paths are no regex)."""
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert message in str(err.value)


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
    refused(["model.hidden_size=128", "model.num_heads=8"], "head_dim of at least 32")


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
    refused(["score.alpha"], "expected key=value")


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
        # their paths are the cluster's (gpu-cluster.yaml's /mnt/shared), not this machine's
        load_config(path, check_paths=False)
    load_config(Path(__file__).parents[1] / "cluster" / "configs" / "local.yaml")  # paths and all


# --- no coercion: a value of the wrong kind is an error naming its key ---

@pytest.mark.parametrize("override, message", [
    ("score.alpha=true", 'score.alpha: expected a number, got bool true'),
    ('seed="7"', 'seed: expected a whole number, got str "7"'),
    ("score.prompts_per_step=8.0", "score.prompts_per_step: expected a whole number, got float 8.0"),
    ("score.stage1_steps=1e3", "score.stage1_steps: expected a whole number, got float 1000.0"),
    ('score.lr="1e-5"', 'score.lr: expected a number, got str "1e-5"'),  # quoted: a string, as YAML says
    ("score.stage2_lr=false", "score.stage2_lr: expected a number, got bool false"),
    ("name=7", "name: expected a string, got int 7"),
    ("seed=", "seed: expected a whole number, got null"),
    ("task.params={flag: true}", "task.params.flag: expected a number or a string, got bool true"),
    ("cluster.rollout_resources={rollout: yes}", "cluster.rollout_resources.rollout: expected a number, got bool true"),
    ("task.params=[1]", "task.params: expected a mapping, got list [1]"),
    ("score=5", "score: expected a section (a mapping of its keys), got int 5"),
])
def test_values_are_not_coerced(override, message):
    refused([override], message)


def test_coercions_in_a_file_are_named_with_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text('seed: "7"\nscore:\n  alpha: true\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert 'seed: expected a whole number, got str "7"' in msg and "score.alpha: expected a number, got bool true" in msg
    assert str(path) in msg


def test_ints_are_numbers_and_exponents_need_no_dot(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("score:\n  alpha: 10\n  lr: 1\n  stage2_lr: 3e-5\ncluster:\n  rollout_resources: {rollout: 1}\n")
    cfg = load_config(path, ["score.beta1=1E-2", "score.grad_clip=2", "warmstart.lr=.5e-3"])
    sc = cfg.score
    assert (sc.alpha, sc.lr, sc.stage2_lr, sc.beta1, sc.grad_clip) == (10.0, 1.0, 3e-5, 0.01, 2.0)
    assert cfg.warmstart.lr == 5e-4 and cfg.cluster.rollout_resources == {"rollout": 1.0}
    assert all(type(v) is float for v in (sc.alpha, sc.lr, sc.stage2_lr, sc.grad_clip))
    # literals, nulls, counts and task parameters of each kind still load
    cfg = load_config(overrides=["cluster.engine=transformers", "score.stage2_lr=null", "cluster.rollout_actors=2",
                                 "task.params={min_len: 3, ratio: 0.5, path: data.jsonl}"])
    assert (cfg.cluster.engine, cfg.score.stage2_lr, cfg.cluster.rollout_actors) == ("transformers", None, 2)
    assert cfg.task.params == {"min_len": 3, "ratio": 0.5, "path": "data.jsonl"}


# --- paths: checked before anything starts ---

def model_dir(tmp_path, config_json: str | None):
    path = tmp_path / "model"
    path.mkdir()
    if config_json is not None:
        (path / "config.json").write_text(config_json)
    return path


def test_a_model_directory_is_accepted(tmp_path):
    path = model_dir(tmp_path, '{"model_type": "qwen2", "hidden_size": 128}')
    assert load_config(overrides=[f"model.path={path}"]).model.path == str(path)


@pytest.mark.parametrize("config_json, message", [
    ('{"model_type": "qwen2",', "config.json is not valid JSON: Expecting"),
    ('{"hidden_size": 128}', "config.json names no model_type"),
    ("[1, 2]", "config.json names no model_type"),
    (None, "has no config.json"),
])
def test_a_broken_model_directory_is_refused(tmp_path, config_json, message):
    path = model_dir(tmp_path, config_json)
    refused([f"model.path={path}"], f"model.path: {path}")
    refused([f"model.path={path}"], message)


def test_a_model_path_that_is_a_file_or_missing_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    refused([f"model.path={tmp_path}/weights.bin"], f"model.path: {tmp_path}/weights.bin is not a directory")
    refused([f"model.path={tmp_path}/nope"], f"model.path: {tmp_path}/nope does not exist")


def test_output_dir_must_be_creatable():
    refused(["output_dir=/dev/null/runs"], "output_dir: /dev/null/runs cannot be created: /dev/null is not a directory")
    # the cache of the locally built model is checked alike, but only when it is used (model.path unset)
    refused(["model.cache_dir=/dev/null/models"], "model.cache_dir: /dev/null/models cannot be created")


def test_output_dir_must_be_a_directory(tmp_path):
    (tmp_path / "runs").write_text("")
    refused([f"output_dir={tmp_path}/runs"], f"output_dir: {tmp_path}/runs exists and is not a directory")


def test_output_dir_under_proc_is_refused():
    if not os.path.isdir("/proc/1"):
        pytest.skip("no /proc/1 here")
    refused(["output_dir=/proc/1/runs"], "output_dir: /proc/1/runs cannot be created: /proc/1 is not writable")


def test_output_dir_in_a_read_only_directory_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root may write into any directory")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        refused([f"output_dir={locked}/a/runs"], f"output_dir: {locked}/a/runs cannot be created: {locked} is not writable")
        refused([f"output_dir={locked}"], f"output_dir: {locked} is not writable")
    finally:
        locked.chmod(0o755)


def test_path_checks_can_be_left_to_the_machine_that_runs(tmp_path):
    cfg = load_config(overrides=["output_dir=/dev/null/runs", f"model.path={tmp_path}/nope"], check_paths=False)
    assert (cfg.output_dir, cfg.model.path) == ("/dev/null/runs", f"{tmp_path}/nope")
