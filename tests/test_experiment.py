"""`python -m learner.experiment --quick`: every method of the suite runs and the table and plots are written."""
import json
import re
import subprocess
import sys

import pytest

from e2e import ROOT

METHODS = {"base", "single_turn", "no_stage1", "no_shaping", "score", "score_pairs", "online_star", "star", "pair_sft"}
METRICS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i", "same_answer")


@pytest.mark.slow
def test_quick_suite_runs_every_method_and_writes_the_table(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "learner.experiment", "--quick", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
         "--set", f"model.cache_dir={tmp_path / 'models'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "quick.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == METHODS
    for r in rows.values():
        assert r["seeds"] == [0, 1]
        for key in METRICS:
            assert set(r[key]) == {"mean", "std"} and 0 <= abs(r[key]["mean"]) <= 100
        # the five metrics are consistent: Δ = Acc@t2 - Acc@t1 = Δi→c - Δc→i, seed by seed
        for a1, a2, d, i2c, c2i in zip(*(r["per_seed"][k] for k in METRICS[:5])):
            assert d == pytest.approx(a2 - a1, abs=0.02) and d == pytest.approx(i2c - c2i, abs=0.02)
    assert rows["base"]["steps"] == 0 and rows["base"]["delta"]["std"] == 0  # greedy: same every seed
    # every trained method gets the same number of steps (the same sampled-token budget in expectation)
    assert {rows[m]["steps"] for m in METHODS - {"base"}} == {4}
    assert rows["no_stage1"]["stage1_steps"] == 0 and rows["no_stage1"]["stage2_steps"] == 4
    # every attempt graded in training is counted (2 seeds x 4 steps x 4 prompts x 2 samples x 2 attempts),
    # and what the grader flagged: nothing, on the built-in task's string comparison
    assert rows["score"]["graded_in_training"] == 128 and rows["base"]["graded_in_training"] == 0
    assert set(rows["score"]["flagged_in_training"].values()) == {0}
    table = (out / "quick.md").read_text()
    first = table.split("95% confidence")[0]  # the mean ± std table; the CI and paired tables follow it
    table_rows = [line for line in first.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert "SCoRe" in table and "Δ(t1,t2)" in table and len(table_rows) == len(METHODS) + 1  # header + methods
    # bootstrap CIs per row and SCoRe's paired comparisons with the others, from per-problem results
    assert result["report"] is False and "problems 1000-1015" in table  # tuning: the validation slice
    for r in rows.values():
        assert r["problems"] == 16
        for key in METRICS[:5]:
            ci = r["ci95"][key]
            assert ci["lo"] <= ci["value"] <= ci["hi"] and ci["value"] == pytest.approx(r[key]["mean"], abs=0.01)
    # SCoRe against every method but its pair-term variant, which is compared with every method, SCoRe too
    assert {(c["score"], c["method"]) for c in result["score_vs"]} == (
        {("score", m) for m in METHODS - {"score", "score_pairs"}} | {("score_pairs", m) for m in METHODS - {"score_pairs"}})
    for c in result["score_vs"]:
        d = rows[c["score"]]["ci95"]["delta"]["value"] - rows[c["method"]]["ci95"]["delta"]["value"]
        assert c["delta"]["diff"] == pytest.approx(d) and c["delta"]["lo"] <= c["delta"]["diff"] <= c["delta"]["hi"]
    assert "SCoRe vs online STaR (own i→c pairs)" in table
    problems = [json.loads(line) for line in (tmp_path / "runs" / "score-s0" / "eval_problems.jsonl").read_text().splitlines()]
    assert len(problems) == 16 and {p["r1"] for p in problems} <= {0.0, 1.0}
    # the intervals come back from the JSON's own per-problem verdicts
    from learner.statistics import bootstrap_ci, decode_outcomes, outcome_arrays

    decoded = decode_outcomes(result["outcomes"])
    arrays = outcome_arrays({m: [decoded[f"{m}-s{s}"] for s in (0, 1)] for m in rows})
    for m, r in rows.items():
        assert bootstrap_ci(*arrays[m]) == r["ci95"]
    for png in ("quick_training_curves.png", "quick_deltas.png"):
        assert (out / png).stat().st_size > 5000
    # each run's held-out evaluations and training records are kept
    evals = result["curves"]["score-s0"]["evals"]
    assert [e["step"] for e in evals] == [0, 2, 4]

    # The same suite again on this runs directory, one run left unfinished (its summary gone, as when a
    # suite is stopped mid-run): the finished runs are reused, only that one runs again, and it comes out
    # as it did the first time.
    (tmp_path / "runs" / "score-s1" / "summary.json").unlink()
    again = subprocess.run(
        [sys.executable, "-m", "learner.experiment", "--quick", "--methods", "base,score", "--out", str(tmp_path / "again"),
         "--runs-dir", str(tmp_path / "runs"), "--set", f"model.cache_dir={tmp_path / 'models'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    reused = set(re.findall(r"\] (\w+) seed (\d): finished before", again.stdout))
    assert reused == {("base", "0"), ("base", "1"), ("score", "0")} and "1 to run" in again.stdout
    assert "4 runs (3 finished by earlier invocations and reused), 1 run here in " in (tmp_path / "again" / "quick.md").read_text()
    second = {r["method"]: r for r in json.loads((tmp_path / "again" / "quick.json").read_text())["rows"]}
    for method in ("base", "score"):
        assert second[method]["per_seed"] == rows[method]["per_seed"]

    # A suite whose run directories are gone: its JSON alone makes the same table again, so a method
    # run later joins it (--with-runs-from); a JSON of other seeds is refused.
    read = subprocess.run(
        [sys.executable, "-m", "learner.experiment", "--quick", "--methods", "score", "--with-runs-from", str(out / "quick.json"),
         "--out", str(tmp_path / "read"), "--runs-dir", str(tmp_path / "empty"), "--set", f"model.cache_dir={tmp_path / 'models'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert read.returncode == 0, read.stdout[-3000:] + read.stderr[-3000:]
    assert "0 to run" in read.stdout and not (tmp_path / "empty" / "score-s0").exists()
    third = json.loads((tmp_path / "read" / "quick.json").read_text())
    assert [r["method"] for r in third["rows"]] == [r["method"] for r in result["rows"]]
    for r in third["rows"]:
        for key in ("per_seed", "ci95", "steps", "graded_in_training", "flagged_in_training"):
            assert r[key] == rows[r["method"]][key], (r["method"], key)
        assert r["wall_s"]["total"] == rows[r["method"]]["wall_s"]["total"]  # the mean only as the total / seeds
    assert third["score_vs"] == result["score_vs"] and third["outcomes"] == result["outcomes"]
    refused = subprocess.run(
        [sys.executable, "-m", "learner.experiment", "--quick", "--seeds", "0", "--with-runs-from", str(out / "quick.json"),
         "--runs-dir", str(tmp_path / "empty"), "--set", f"model.cache_dir={tmp_path / 'models'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert refused.returncode != 0 and "do not make one table" in refused.stderr


def suite(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "learner.experiment", "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_saved_models_are_the_trained_policies_and_runs_start_from_them(tmp_path):
    from safetensors.torch import load_file

    # The quick suite's steps on the shipped base (the quick base's rewards are all 0: nothing would train).
    shipped = ["--set", "model.num_layers=4", "--set", "warmstart.max_steps=2000", "--set", "warmstart.check_every=25",
               "--set", "score.max_new_tokens=48"]
    runs = tmp_path / "runs"
    suite("--methods", "score", "--seeds", "0", "--runs-dir", str(runs), *shipped)
    assert not (runs / "score-s0" / "model").exists()  # only asked for
    # Finished, but without its policy: --save-models runs it again, and writes it whole.
    again = suite("--methods", "score", "--seeds", "0", "--save-models", "--runs-dir", str(runs), *shipped)
    assert "1 to run" in again.stdout
    model, base = runs / "score-s0" / "model", ROOT / "learner" / "model" / "default_base"
    assert "(learner/model/default_base)" in again.stdout and not list(model.parent.glob("*.tmp"))
    trained, warm = load_file(model / "model.safetensors"), load_file(base / "model.safetensors")
    assert trained.keys() == warm.keys() and all(trained[k].shape == warm[k].shape for k in warm)
    assert sum(not (trained[k] == warm[k]).all() for k in warm) == len(warm)  # trained: every tensor moved
    assert (model / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    # A run from it (model.path), untrained, evaluates the same problems to what the run's end measured.
    suite("--methods", "base", "--seeds", "0", "--runs-dir", str(tmp_path / "from_saved"), *shipped,
          "--set", f"model.path={model}")
    final = json.loads((runs / "score-s0" / "summary.json").read_text())["final"]
    loaded = json.loads((tmp_path / "from_saved" / "base-s0" / "summary.json").read_text())["final"]
    assert final["acc_t1"] > 0 and {k: loaded[k] for k in METRICS} == {k: final[k] for k in METRICS}


def test_tuning_refuses_the_reported_slice_and_reporting_needs_it():
    """The protocol (docs/results/PROTOCOL.md): without --report the suite evaluates on validation and
    refuses any evaluation that overlaps problems 0-999; --report evaluates on them and nowhere else.
    Refused before any work is done."""
    from learner.experiment import REPORTED_SLICE, check_eval_slice, main
    from protos import load_config

    assert REPORTED_SLICE == (0, 1000)
    for settings in (["task.eval_offset=0"], ["task.eval_offset=900", "task.eval_size=256"], ["task.eval_offset=999", "task.eval_size=1"]):
        with pytest.raises(ValueError, match="overlap the reported slice"):
            check_eval_slice(load_config(None, settings), report=False)
    check_eval_slice(load_config(None, ["task.eval_offset=1000", "task.eval_size=1000"]), report=False)
    check_eval_slice(load_config(None, ["task.eval_offset=0", "task.eval_size=1000"]), report=True)
    with pytest.raises(ValueError, match="--report evaluates on the reported slice"):
        check_eval_slice(load_config(None, ["task.eval_offset=1000"]), report=True)
    with pytest.raises(ValueError, match="--report evaluates on the reported slice"):
        check_eval_slice(load_config(None, ["task.eval_offset=900", "task.eval_size=256"]), report=True)
    with pytest.raises(ValueError, match="overlap the reported slice"):
        main(["--quick", "--set", "task.eval_offset=0"])
    with pytest.raises(ValueError, match="--report evaluates"):
        main(["--quick", "--report", "--set", "task.eval_offset=1000"])


def test_the_held_out_split_holds_both_slices():
    from graders.registry import make_task

    problems = make_task("sort", {}).eval_problems(2000)
    assert len({p.prompt for p in problems}) == 2000  # validation 1000-1999 distinct from the reported 0-999


def test_a_rate_has_one_spelling_so_finished_runs_are_found_however_it_is_written():
    from learner.experiment import variants

    assert variants(["score@3e-4", "star@0.0001", "base"], None) == ["score@0.0003", "star@0.0001", "base"]
    assert variants(["score", "pair_sft@1e-4", "base"], [1e-4, 3e-4]) == ["score@0.0001", "score@0.0003", "pair_sft@0.0001", "base"]
    assert variants(["score"], None) == ["score"]
    with pytest.raises(ValueError, match="'score@fast': the learning rate after '@' is not a number"):
        variants(["score@fast"], [1e-4])


def test_every_trained_method_gets_the_same_learning_rate_grid():
    """No method trains at a rate the others were not offered: each of the grid's rates is the rate of
    every method's first (or only) stage, the Stage-II-only ablation included (it ran at SCoRe's 10x
    lower Stage II rate before)."""
    from learner.experiment import SUITES, run_config, variants
    from learner.training.losses import stage_schedule

    suite = SUITES["default"]
    names = variants(suite["methods"], suite["lrs"])
    assert names.count("base") == 1 and len(names) == 1 + (len(METHODS) - 1) * len(suite["lrs"])
    first_stage_lr: dict[str, set] = {}
    for name in names:
        cfg = run_config(suite["settings"], name, seed=0)
        schedule = stage_schedule(cfg.score)
        method = name.split("@")[0]
        if method == "base":
            assert sum(n for _, n in schedule) == 0
            continue
        assert sum(n for _, n in schedule) == 140  # the same steps, the same sampled-token budget
        assert cfg.score.lr == float(name.split("@")[1])
        first_stage_lr.setdefault(method, set()).add(schedule[0][0].lr if schedule[0][1] else schedule[1][0].lr)
    assert set(first_stage_lr) == METHODS - {"base"}
    assert all(lrs == set(suite["lrs"]) for lrs in first_stage_lr.values()), first_stage_lr
    # SCoRe keeps its Stage II rate; the ablation without Stage I is not given it
    score = stage_schedule(run_config(suite["settings"], "score@0.0003", 0).score)
    no_stage1 = [(o.stage, n, o.lr) for o, n in stage_schedule(run_config(suite["settings"], "no_stage1@0.0003", 0).score) if n]
    assert [o.lr for o, _ in score] == [3e-4, 3e-5] and no_stage1 == [(2, 140, 3e-4)]


def test_the_code_suite_runs_the_code_task_on_the_code_configs_base():
    """The code suite's runs are the code task with cluster/configs/code.yaml's task settings, so they
    share its warm-started base (one cache key), and they keep the protocol's grid and budget."""
    from learner.experiment import SUITES, run_config, variants
    from learner.model.warmstart import cache_key
    from protos import load_config

    suite = SUITES["code"]
    shipped = cache_key(load_config("cluster/configs/code.yaml"))
    for name in variants(suite["methods"], suite["lrs"]):
        cfg = run_config(suite["settings"], name, seed=0)
        assert cfg.task.name == "code" and cache_key(cfg) == shipped, name
        if name != "base":
            assert cfg.score.stage1_steps + cfg.score.stage2_steps == 70


def test_score_pairs_ablations_are_the_plain_ablations_with_the_pair_term():
    """no_stage1_pairs and no_shaping_pairs differ from no_stage1 and no_shaping by score.pair_coef=1 only,
    as score_pairs differs from score."""
    from learner.experiment import SUITES, run_config

    settings = SUITES["default"]["settings"]
    for plain, with_pairs in (("score", "score_pairs"), ("no_stage1", "no_stage1_pairs"), ("no_shaping", "no_shaping_pairs")):
        a, b = (run_config(settings, f"{m}@0.0003", seed=0) for m in (plain, with_pairs))
        assert a.score.pair_coef == 0 and b.score.pair_coef == 1
        assert b.score.model_copy(update={"pair_coef": 0.0}) == a.score and b.name == f"{with_pairs}@0.0003-s0"
        # and the episode-credit variant of each: the same, Stage II crediting the episode's return at α = 1
        # (α = 0 for the ablation without shaping, the one setting that tells it apart)
        c = run_config(settings, f"{with_pairs}_episode@0.0003", seed=0)
        assert c.score.stage2_credit == "episode" and b.score.stage2_credit == "attempt"
        assert c.score.alpha == (0 if plain == "no_shaping" else 1)
        assert c.score.model_copy(update={"stage2_credit": "attempt", "alpha": b.score.alpha}) == b.score


def test_a_method_that_replaces_a_set_value_says_so():
    """A method's own settings win over --set (score_pairs keeps λ = 1, no_shaping α = 0): the suite
    names each replaced key instead of running something other than what --set asked, silently."""
    from learner.experiment import SUITES, replaced_settings, run_config
    from protos import load_config

    user = ["score.pair_coef=2", "score.alpha=5", "score.stage2_steps=120"]
    settings = SUITES["default"]["settings"] + user
    base = load_config(None, settings)
    said = {m: replaced_settings(user, base, run_config(settings, f"{m}@0.0003", seed=0))
            for m in ("score", "score_pairs", "no_shaping", "no_stage1")}
    assert said["score"] == []
    assert said["score_pairs"] == ["score.pair_coef=1.0 (not --set's 2.0)"]
    assert said["no_shaping"] == ["score.alpha=0.0 (not --set's 5.0)"]
    assert said["no_stage1"] == ["score.stage2_steps=220 (not --set's 120)"]


def test_each_score_variant_is_compared_with_every_method_and_the_variants_before_it():
    """Paired comparisons: SCoRe with every method but its pair-term variants; score_pairs with every
    method, SCoRe included; score_pairs_episode with every method, both of those included."""
    import random

    from learner.experiment import add_statistics

    methods = ["base", "score@0.0003", "score_pairs@0.0003", "no_shaping_pairs_episode@0.0003", "score_pairs_episode@0.0003"]
    draw = random.Random(0)
    runs = {(m, 0): {"problems": [{"problem_id": i, "r1": draw.random() < 0.5, "r2": draw.random() < 0.5} for i in range(50)]}
            for m in methods}
    rows = [{"method": m, "label": m} for m in methods]
    pairs = {(c["score"], c["method"]) for c in add_statistics(rows, runs, seeds=[0], n_boot=20)}
    assert pairs == ({("score@0.0003", m) for m in ("base", "no_shaping_pairs_episode@0.0003")}
                     | {("score_pairs@0.0003", m) for m in ("base", "score@0.0003", "no_shaping_pairs_episode@0.0003")}
                     | {("score_pairs_episode@0.0003", m) for m in methods[:4]})
