"""The shipped configs' base models are in the repository: the default config and the code task's
train from them (no warm-start), each named by its content hash; a damaged copy is refused; any other
recipe still warm-starts into the cache."""
import shutil

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.model import base
from learner.model.warmstart import cache_key, ensure_base_model
from protos import load_config


def test_the_default_config_uses_the_shipped_base_as_its_manifest_names_it(sort_task, tmp_path):
    cfg = load_config(None, [f"model.cache_dir={tmp_path}"])
    lines = []
    assert ensure_base_model(cfg, sort_task, lines.append) == base.SHIPPED
    assert lines == [f"base model: the shipped base {cache_key(cfg)} (learner/model/default_base)"]
    assert list(tmp_path.iterdir()) == []  # nothing warm-started, nothing cached
    manifest = base.manifest()
    assert manifest["cache_key"] == cache_key(cfg) and base.content_hash(base.SHIPPED) == manifest["sha256"]
    # a plain Hugging Face directory: transformers loads it, and it answers the task's prompt
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base.SHIPPED), AutoTokenizer.from_pretrained(base.SHIPPED)
    assert model.num_parameters() == manifest["built"]["params"] and len(tokenizer) == model.config.vocab_size


def test_the_code_config_and_the_code_suite_use_the_shipped_code_base(tmp_path):
    from graders.registry import make_task
    from learner.experiment import SUITES

    for cfg in (load_config("cluster/configs/code.yaml", [f"model.cache_dir={tmp_path}"]),
                load_config(None, SUITES["code"]["settings"] + [f"model.cache_dir={tmp_path}"])):
        assert ensure_base_model(cfg, make_task(cfg.task.name, cfg.task.params), print) == base.SHIPPED_CODE
    assert list(tmp_path.iterdir()) == []
    manifest = base.manifest(base.SHIPPED_CODE)
    assert base.content_hash(base.SHIPPED_CODE) == manifest["sha256"] != base.manifest()["sha256"]
    # its recipe names the same base: `--rebuild --base code_base` warm-starts what the code config would
    assert cache_key(load_config(None, manifest["recipe"]["config_overrides"])) == manifest["cache_key"] == cache_key(cfg)


def test_a_changed_file_of_the_shipped_base_is_refused(monkeypatch, tmp_path):
    copy = tmp_path / "default_base"
    shutil.copytree(base.SHIPPED, copy)
    monkeypatch.setattr(base, "SHIPPED", copy)
    key = base.manifest()["cache_key"]
    assert base.shipped_for(key) == copy
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text().replace("<|pad|>", "<|pad2|>"))
    with pytest.raises(base.BaseModelError, match="its files were changed"):
        base.shipped_for(key)
    assert base.main([]) == 1  # the check command says so too


def test_another_recipe_is_not_the_shipped_base(sort_task):
    cfg = load_config(None, ["warmstart.target_accuracy=60"])
    assert cache_key(cfg) != base.manifest()["cache_key"] and base.shipped_for(cache_key(cfg)) is None


def test_the_hash_covers_weights_and_tokenizer_but_not_the_build_record(tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(base.SHIPPED, copy)
    before = base.content_hash(copy)
    (copy / "warmstart.json").write_text("{}")  # a wall time, not the model
    assert base.content_hash(copy) == before
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text() + " ")
    assert base.content_hash(copy) != before


def test_rebuild_says_whether_the_recipe_gives_the_shipped_base_again(monkeypatch, tmp_path):
    """The rebuild command on a recipe small enough for a test (the real one takes about 10 minutes):
    a base built from another recipe differs (and both are evaluated); built again from its own
    recipe on the same machine, it is the same base byte for byte."""
    recipe = ["model.num_layers=1", "warmstart.max_steps=3", "warmstart.check_every=3", "warmstart.batch_size=4",
              "task.eval_size=4", "score.max_new_tokens=8"]
    shipped = tmp_path / "shipped"
    shutil.copytree(base.SHIPPED, shipped)
    monkeypatch.setattr(base, "SHIPPED", shipped)
    cfg = load_config(None, recipe, check_paths=False)
    base.write_manifest(shipped, cache_key(cfg), recipe)  # the 4-layer base, claimed to come from this recipe
    lines = []
    assert base.rebuild(tmp_path / "first", lines.append) is False
    assert any(line.startswith("differs from the shipped base: weights up to inf apart") for line in lines)
    assert lines[-1].startswith("rebuilt minus shipped: acc_t1 ")

    shutil.rmtree(shipped)
    shutil.copytree(tmp_path / "first", shipped)  # now ship what that recipe gave
    lines = []
    assert base.rebuild(tmp_path / "second", lines.append) is True
    assert lines[-1] == "identical to the shipped base, byte for byte"
