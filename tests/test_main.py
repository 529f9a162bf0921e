"""`python -m learner.main` end to end on a local Ray, and its handling of bad input."""
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from e2e import quick_overrides, run_cli
from learner.model.base import content_hash


@pytest.mark.slow
def test_full_run_writes_a_complete_run_directory(tmp_path):
    # two FSDP ranks, and the collective weight sync (its gloo form: the code path NCCL takes on GPUs)
    proc = run_cli(quick_overrides(tmp_path) + ["--set", "cluster.learner_workers=2", "--set", "cluster.weight_sync=collective"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stage 1 step 2/2" in proc.stdout and "stage 2 step 2/2" in proc.stdout
    assert "Acc@t1" in proc.stdout and "SCoRe" in proc.stdout

    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "summary.json").exists()]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["eval", "train", "train", "train", "train", "eval"]
    assert [r["stage"] for r in records if r["kind"] == "train"] == [1, 1, 2, 2]
    assert [r["policy_version"] for r in records] == [0, 1, 2, 3, 4, 4]
    # the default lag of 1: each step trained on traces its previous step's sync sent, or the one before
    train = [r for r in records if r["kind"] == "train"]
    for r in train:
        assert r["policy_version"] - 2 <= r["sampled_policy_version"] <= r["policy_version"] - 1
    assert train[0]["sampled_policy_version"] == train[1]["sampled_policy_version"] == 0  # step 2 sampled during step 1
    # the learner scores the sampled tokens as vLLM did, but for the lag: the weights moved since
    on_policy = [r for r in train if r["policy_lag_max"] == 0]
    assert on_policy and max(r["logprob_abs_diff"] for r in on_policy) < 1e-4
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["metrics"]) == {"base", "SCoRe"}
    # the run names its base by content hash: log, config.yaml, summary (the registry: tests/test_registry.py)
    base_hash = content_hash(summary["base_model"])
    assert summary["base_sha256"] == base_hash and f"base model sha256: {base_hash[:12]}" in proc.stdout
    assert f"# base_sha256: {base_hash}\n" in (run / "config.yaml").read_text()
    assert "| eta " in proc.stdout
    assert (run / "training.png").stat().st_size > 1000 and (run / "config.yaml").exists()
    # resumable checkpoints after the base evaluation and the last step: each of the two ranks wrote its own shards
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000", "step_000004"]
    assert len(list((run / "checkpoints" / "step_000004" / "learner").glob("*.distcp"))) == 2

    # the checkpoint is a Hugging Face directory that loads and generates
    model = AutoModelForCausalLM.from_pretrained(run / "checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(run / "checkpoint")
    ids = tokenizer("sort: 3 1 2\nanswer:", return_tensors="pt")["input_ids"]
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3


def test_unknown_key_stops_before_anything_is_written(tmp_path):
    proc = run_cli(["--set", f"output_dir={tmp_path}/runs", "--set", "score.alfa=3"])
    assert proc.returncode == 2
    assert "score.alfa: unknown key" in proc.stderr and "alpha" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_model_path_is_named(tmp_path):
    proc = run_cli(["--set", f"output_dir={tmp_path}/runs", "--set", f"model.path={tmp_path}/nope"])
    assert proc.returncode == 2 and f"model.path: {tmp_path}/nope does not exist" in proc.stderr  # before Ray starts
    assert not (tmp_path / "runs").exists()


def test_unreachable_cluster_fails_fast_with_the_address(tiny_model_dir, tmp_path):
    proc = run_cli(
        ["--set", f"output_dir={tmp_path}/runs", "--set", f"model.path={tiny_model_dir}",
         "--set", "cluster.ray_address=127.0.0.1:1"],
        timeout=120,
    )
    assert proc.returncode == 1 and "'127.0.0.1:1' does not answer" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path, capsys):
    from learner.main import main
    from protos import dump_config, load_config

    run = tmp_path / "score-1"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(load_config(None, [f"output_dir={tmp_path}"])))
    changes = ["--set", "score.alpha=5", "--set", "cluster.rollout_actors=3"]
    assert main(["--resume", str(run), *changes]) == 2
    err = capsys.readouterr().err
    assert "changes cluster.rollout_actors, score.alpha from the run's config" in err and "--allow-change" in err
    assert main(["--resume", str(run), *changes, "--allow-change", "cluster"]) == 2  # one key still refused
    assert "changes score.alpha from" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.yaml there" in capsys.readouterr().err
    assert main(["--resume", str(run), "--config", str(run / "config.yaml")]) == 2
