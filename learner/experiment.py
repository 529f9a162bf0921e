"""The experiment suite: SCoRe against the base model, the paper's baselines and its ablations.

    python -m learner.experiment --suite default          # tuning: every method at each rate of the grid, on validation
    python -m learner.experiment --suite quick            # CI: every method runs, the table is written
    python -m learner.experiment --suite default --lrs 2e-4 --methods score,no_stage1
    python -m learner.experiment --suite default --report --methods base,score@3e-4,...   # the reported run
    python -m learner.experiment --methods pair_sft@1e-4 --seeds 0 --save-models   # keep each trained policy (<run>/model)

The protocol (docs/results/PROTOCOL.md): held-out problems 0-999 are reported, 1000-1999 validate.
Without --report the suite evaluates on validation and refuses any evaluation overlapping 0-999;
with --report it evaluates inside 0-999 only. Every trained method gets the same grid of learning
rates (score.lr; the suite's `lrs` or --lrs), each rate a run named `method@lr`. The table gives
mean ± std over seeds, 95% bootstrap intervals over problems and seeds, and SCoRe's paired
differences with every other method on Δ and Acc@t2 (learner/statistics.py), from the per-problem
verdicts each run saves (eval_problems.jsonl in its run directory; the suite's JSON keeps them all,
compactly, under "outcomes", so the intervals can be recomputed from that file alone).

Every method starts from the same base model (shipped, learner/model/), trains on the same task for the same number
of steps of the same batch shape (so the same budget of sampled tokens: prompts x k x 2 attempts
per step) and is evaluated by the same greedy evaluation on the same held-out split. Each
(method, seed) run is one process running the training loop on the in-process backend
(learner/driver/local_backend.py: the real rollout worker, grader and FSDP learner, without
Ray), several side by side.

Methods (each a RunConfig, so `python -m learner.main --set ...` runs any of them too; a method's own
settings go on top of --set, and the suite logs every --set value one replaces: to try another λ, run
`--methods score --set score.pair_coef=2`, not score_pairs):
  base         the warm-started base model prompted to self-correct; no training
  single_turn  RL on attempt 1 only (score.method=single_turn); attempt 2 by prompting
  no_stage1    Stage II's objective from the base (score.stage1_steps=0, all steps in Stage II)
  no_shaping   SCoRe with alpha = 0 (score.alpha=0)
  score        SCoRe: Stage I then Stage II
  score_pairs  SCoRe with an auxiliary Pair-SFT term on each step's own batch (score.pair_coef=1; not in
               the paper): every wrong first attempt followed by a right response to the same problem
               from the batch, supervised, at no extra samples; its ablations no_stage1_pairs and
               no_shaping_pairs (run with --methods)
  score_pairs_episode  score_pairs with Stage II crediting attempt 1 with the episode's return at
               alpha = 1 (score.stage2_credit=episode, score.alpha=1: attempt 1 trained for the final
               answer only); its ablations no_stage1_pairs_episode and no_shaping_pairs_episode
               (alpha = 0 under the same credit, where the bonus acts); all three run with --methods
  online_star  STaR on the policy's own (wrong attempt 1, right attempt 2) traces, re-sampled
               every step (score.method=online_star); the imitation term averaged over those pairs
  star         the paper's STaR: SFT on the base model's successful revisions, sampled before the
               first update (score.method=star)
  pair_sft     the paper's Pair-SFT: SFT on the base model's wrong first attempts, each followed by a
               correct response to the same problem (score.method=pair_sft)

The `code` suite runs the base, SCoRe, SCoRe without shaping and single-turn RL on the code task
(graders/code_task.py: programs graded in the warm sandbox during training), with the same protocol.

The `offpolicy` suite runs SCoRe with rollouts one step ahead of the learner (cluster.max_policy_lag=1,
in one process the same schedule as on Ray) with and without the importance-ratio correction
(score_lag1, score_lag1_no_is), next to on-policy SCoRe, on the validation slice.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from learner.driver.metrics import FLAGGED
from protos import RunConfig, load_config

METRICS = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i", "same_answer")
LABELS = {
    "base": "base model (prompted)",
    "single_turn": "single-turn RL",
    "no_stage1": "SCoRe w/o Stage I",
    "no_shaping": "SCoRe w/o reward shaping (α=0)",
    "score": "SCoRe",
    "score_pairs": "SCoRe + its own pairs (λ=1)",
    "no_stage1_pairs": "SCoRe + its own pairs, w/o Stage I",
    "no_shaping_pairs": "SCoRe + its own pairs, w/o reward shaping (α=0)",
    "score_pairs_episode": "SCoRe + its own pairs, episode credit (α=1)",
    "no_stage1_pairs_episode": "SCoRe + its own pairs, episode credit, w/o Stage I",
    "no_shaping_pairs_episode": "SCoRe + its own pairs, episode credit, w/o reward shaping (α=0)",
    "online_star": "online STaR (own i→c pairs)",
    "star": "STaR (the base's i→c, offline)",
    "pair_sft": "Pair-SFT (the base's wrong + right, offline)",
    "score_lag1": "SCoRe, policy lag 1, truncated IS",
    "score_lag1_no_is": "SCoRe, policy lag 1, no correction",
}

def task_settings(config_file: Path) -> list[str]:
    """--set pairs for the task a shipped config trains on (its task, the task's params, the answer
    length): a suite with them warm-starts the same base as that config (one cache key)."""
    cfg = load_config(config_file, check_paths=False)
    return ([f"task.name={cfg.task.name}"] + [f"task.params.{k}={v}" for k, v in cfg.task.params.items()]
            + [f"score.max_new_tokens={cfg.score.max_new_tokens}"])


# The suites' shared settings, as --set pairs over RunConfig's defaults; docs/results/NOTES.md says how
# they were chosen, on which slice, and what else was tried.
# The recipe frozen on validation (held-out problems 1000-1999) for the reported suite: 140 steps of
# 32 prompts x 4 samples x 2 attempts per run (at 70 no method had finished learning); SCoRe's Stage I
# at score.lr for 100 steps, Stage II at 3e-5 for 40; each attempt's advantages divided by their
# batch std (RL methods), so that under the gradient clip Stage II's wide shaped rewards do not set
# the update's direction alone. Evaluations at the end of Stage I and of the run. On-policy
# (cluster.max_policy_lag=0): in one process rollouts gain nothing from running ahead; the offpolicy
# suite says what lag costs. The learner takes each step's rows at once
# (learner_micro_batch_tokens=0): micro-batches give the same update up to float rounding, not bit for bit.
RECIPE = [
    "score.lr=3e-4", "score.stage2_lr=3e-5", "score.stage1_steps=100", "score.stage2_steps=40",
    "score.normalize_advantages=true", "eval.every_steps=50", "cluster.max_policy_lag=0",
    "cluster.learner_micro_batch_tokens=0",
]
# The 70-step recipe before it (Stage I 50 steps, Stage II 20, advantages not normalised), with which
# the code task's and the offpolicy suite's tables were measured.
RECIPE_70_STEPS = RECIPE + [
    "score.stage1_steps=50", "score.stage2_steps=20", "score.normalize_advantages=false", "eval.every_steps=10",
]
SUITES: dict[str, dict] = {
    "default": {
        "seeds": [0, 1, 2],
        "methods": ["base", "single_turn", "no_stage1", "no_shaping", "score", "score_pairs", "online_star", "star",
                    "pair_sft"],
        "settings": RECIPE,
        # one grid of learning rates (score.lr) for every trained method; each keeps its best on
        # validation, and the reported run takes those (--report --methods score@3e-4,...). 1e-3 left
        # the grid after 70-step runs on validation: the worst rate of STaR, Pair-SFT and SCoRe there.
        "lrs": [1e-4, 3e-4],
    },
    "offpolicy": {
        # SCoRe with rollouts one step ahead of the learner (the Ray default), with and without the
        # importance-ratio correction, next to on-policy SCoRe; on the validation slice
        "seeds": [0, 1, 2],
        "methods": ["score", "score_lag1", "score_lag1_no_is"],
        "settings": RECIPE_70_STEPS,
    },
    "code": {
        # the code task (graders/code_task.py), graded in the warm sandbox inside the training loop:
        # the base, SCoRe, its α = 0 ablation and single-turn RL, with the built-in task's 70-step recipe
        # and the default suite's grid (each method keeps its best rate on validation; 1e-3 was not run
        # on this task). The task settings are read from cluster/configs/code.yaml, so its base (the
        # shipped learner/model/code_base) is shared.
        "seeds": [0, 1, 2],
        "methods": ["base", "single_turn", "no_shaping", "score"],
        "settings": RECIPE_70_STEPS + task_settings(Path(__file__).resolve().parents[1] / "cluster/configs/code.yaml"),
        "lrs": [1e-4, 3e-4],
    },
    "quick": {
        "seeds": [0, 1],
        "methods": ["base", "single_turn", "no_stage1", "no_shaping", "score", "score_pairs", "online_star", "star",
                    "pair_sft"],
        # CI: every method runs end to end and the table and plots are written; the numbers mean
        # nothing (a 30-step warm-start of a 2-layer model, 2 + 2 RL steps).
        "settings": [
            "model.num_layers=2", "warmstart.max_steps=30", "warmstart.check_every=30",
            "score.stage1_steps=2", "score.stage2_steps=2", "score.prompts_per_step=4",
            "score.samples_per_prompt=2", "score.max_new_tokens=12", "task.eval_size=16", "eval.every_steps=2",
        ],
    },
}


# The protocol (docs/results/PROTOCOL.md): the held-out split's problems 0-999 are reported, 1000-1999
# validate. Every choice is made on validation; only the final, frozen run evaluates on the reported
# slice, and says so (--report).
REPORTED_SLICE = (0, 1000)
VALIDATION_OFFSET = 1000


def check_eval_slice(cfg: RunConfig, report: bool) -> None:
    """Refuses an evaluation that overlaps the reported slice unless this is the reported run, and a
    reported run that evaluates outside it."""
    lo, hi = cfg.task.eval_offset, cfg.task.eval_offset + cfg.task.eval_size
    overlaps = lo < REPORTED_SLICE[1] and hi > REPORTED_SLICE[0]
    if overlaps and not report:
        raise ValueError(f"held-out problems {lo}-{hi - 1} overlap the reported slice {REPORTED_SLICE[0]}-"
                         f"{REPORTED_SLICE[1] - 1}: tune on validation (task.eval_offset>={VALIDATION_OFFSET}), or pass "
                         "--report for the final run of a frozen recipe (docs/results/PROTOCOL.md)")
    if report and not (REPORTED_SLICE[0] <= lo and hi <= REPORTED_SLICE[1]):
        raise ValueError(f"--report evaluates on the reported slice {REPORTED_SLICE[0]}-{REPORTED_SLICE[1] - 1}, "
                         f"not on problems {lo}-{hi - 1}")


def split_variant(name: str) -> tuple[str, float | None]:
    """"score@3e-4" -> ("score", 3e-4): a method at one learning rate of the suite's grid; "score" -> ("score", None)."""
    method, _, lr = name.partition("@")
    try:
        return method, (float(lr) if lr else None)
    except ValueError:
        raise ValueError(f"method {name!r}: the learning rate after '@' is not a number") from None


def variants(methods: list[str], lrs: list[float] | None) -> list[str]:
    """The suite's runs' names: each trained method at each learning rate of the grid (the same grid for
    every method), `method@lr`; the untrained base once; a name that already carries a rate at that rate.
    A rate has one spelling (`:g`), so `score@3e-4` and `score@0.0003` name, and reuse, the same runs."""
    out: list[str] = []
    for name in methods:
        method, lr = split_variant(name)
        if lr is not None:
            out.append(f"{method}@{lr:g}")
        elif method == "base" or not lrs:
            out.append(method)
        else:
            out += [f"{method}@{rate:g}" for rate in lrs]
    return out


def label(name: str) -> str:
    method, lr = split_variant(name)
    return LABELS.get(method, method) + (f", lr {lr:g}" if lr is not None else "")


def method_overrides(name: str, cfg: RunConfig) -> list[str]:
    """--set pairs that turn the suite's SCoRe config into `name`, a method or `method@lr` (same
    total steps). The grid's rate is score.lr: the rate of every method's first (or only) stage.
    score.stage2_lr stays a setting of SCoRe's second stage (and its α = 0 ablation's); the
    Stage-II-only ablation's one stage runs at score.lr like every other method's first stage, not at
    SCoRe's Stage II rate (which made it a 10x-lower-rate run before)."""
    method, lr = split_variant(name)
    rate = [f"score.lr={lr:g}"] if lr is not None else []
    sc = cfg.score
    total = sc.stage1_steps + sc.stage2_steps
    overrides = {
        "base": ["score.stage1_steps=0", "score.stage2_steps=0"],
        "single_turn": ["score.method=single_turn"],
        "no_stage1": ["score.stage1_steps=0", f"score.stage2_steps={total}", "score.stage2_lr=null"],
        "no_shaping": ["score.alpha=0"],
        "score": [],
        "online_star": ["score.method=online_star"],
        "star": ["score.method=star"],
        "pair_sft": ["score.method=pair_sft"],
        "score_lag1": ["cluster.max_policy_lag=1"],
        "score_lag1_no_is": ["cluster.max_policy_lag=1", "score.importance_ratio_cap=null"],
    }
    pairs = ["score.pair_coef=1"]  # SCoRe with its own pairs, and its two ablations
    overrides |= {"score_pairs": pairs, "no_stage1_pairs": overrides["no_stage1"] + pairs,
                  "no_shaping_pairs": overrides["no_shaping"] + pairs}
    episode = ["score.stage2_credit=episode", "score.alpha=1"]  # and each of those with episode credit
    overrides |= {f"{m}_episode": episode + overrides[m] for m in ("score_pairs", "no_stage1_pairs", "no_shaping_pairs")}
    return rate + overrides[method]


def run_config(settings: list[str], method: str, seed: int) -> RunConfig:
    cfg = load_config(None, settings)
    return load_config(None, settings + method_overrides(method, cfg) + [f"seed={seed}", f"name={method}-s{seed}"])


def replaced_settings(user_sets: list[str], base: RunConfig, cfg: RunConfig) -> list[str]:
    """The --set keys a method's own settings replace in `cfg` (a method is a fixed setting on top of
    --set: `--set score.alpha=5` leaves `no_shaping` at α = 0, and `score_pairs` at λ = 1 whatever
    `--set score.pair_coef` says), as "key=its value (not --set's value)": said, never silently done."""
    def value(config: dict, key: str):
        for part in key.split("."):
            config = config.get(part) if isinstance(config, dict) else None
        return config

    mine, theirs = base.model_dump(), cfg.model_dump()
    keys = dict.fromkeys(pair.partition("=")[0].strip() for pair in user_sets)
    return [f"{key}={value(theirs, key)} (not --set's {value(mine, key)})" for key in keys
            if value(theirs, key) != value(mine, key)]


def _log_to(path: Path):
    def log(msg: str) -> None:
        with path.open("a") as f:
            f.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    return log


def run_one(cfg_json: str, base_dir: str, out_dir: str, threads: int, save_model: bool = False) -> dict:
    """One (method, seed) run in this process; returns its summary (also written as summary.json).
    save_model: also write the trained policy to `out_dir`/model, a Hugging Face directory (the
    weights, and the base's tokenizer), which `model.path` can start another run from."""
    from common.logs import configure_process
    from graders.registry import make_task
    from learner.driver.local_backend import LocalBackend
    from learner.driver.loop import TrainLoop

    configure_process(threads)
    cfg = RunConfig.model_validate_json(cfg_json)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)  # an unfinished earlier try's records
    (out / "config.json").write_text(cfg_json)  # what a later suite in this runs directory compares to reuse it
    records: list[dict] = []

    def on_record(r: dict) -> None:
        records.append(r)
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(r) + "\n")

    log = _log_to(out / "log.txt")
    started = time.perf_counter()
    backend = LocalBackend(cfg, base_dir)
    loop = TrainLoop(cfg, make_task(cfg.task.name, cfg.task.params), backend, on_record, log)
    try:
        first = loop.evaluate(step=0)
        loop.train()
        steps = cfg.score.stage1_steps + cfg.score.stage2_steps
        final = loop.evaluate(step=steps) if steps else first
        problems = loop.last_eval_problems  # the final evaluation's, per problem: the tables' bootstrap
        if save_model:
            save_policy(backend, Path(base_dir), out / "model")
    finally:
        backend.close()
    with (out / "eval_problems.jsonl").open("w") as f:
        f.writelines(json.dumps(p) + "\n" for p in problems)
    train = [r for r in records if r["kind"] == "train"]
    summary = {
        "name": cfg.name, "seed": cfg.seed, "final": final, "steps": len(train),
        "wall_s": time.perf_counter() - started,
        "sampled_tokens": float(sum(r["rollout_tokens"] for r in train)),
        "evals": [r for r in records if r["kind"] == "eval"],
        "train_reward": [[r["step"], r["reward_t1"], r["reward_t2"]] for r in train],
        # attempts graded in training, and those the grader flagged (where gaming it would show first)
        "graded_in_training": 2 * sum(r["traces_trained"] + r["traces_left_out"] for r in train),
        "flagged_in_training": {s: sum(r.get(f"train_flagged_{s}", 0) for r in train) for s in FLAGGED},
        "problems": problems,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"done in {summary['wall_s']:.0f}s: " + " ".join(f"{k} {final[k]:.1f}" for k in METRICS))
    return summary


def save_policy(backend, base_dir: Path, out: Path) -> None:
    """The backend's policy as a Hugging Face directory with the base's tokenizer, written whole or not
    at all (built beside `out`, then renamed)."""
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    backend.save(str(staging))
    for tokenizer_file in base_dir.glob("tokenizer*"):
        shutil.copy(tokenizer_file, staging / tokenizer_file.name)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)


def _worker(args):
    return args[0], args[1], run_one(*args[2:])


def finished_run(cfg: RunConfig, run_dir: Path) -> dict | None:
    """The summary of a run already finished in `run_dir` with exactly this configuration, or None: a
    suite given the runs directory of an interrupted one (--runs-dir) redoes only what is missing."""
    try:
        same = RunConfig.model_validate_json((run_dir / "config.json").read_text()) == cfg
        return json.loads((run_dir / "summary.json").read_text()) if same else None
    except (OSError, ValueError):
        return None


def runs_from_json(path: Path, settings: list[str], seeds: list[int]) -> dict[tuple[str, int], dict]:
    """The runs of an earlier suite's JSON, as the summaries a table is made from, for a suite whose run
    directories are gone (e.g. a method added to the reported table later): each run's per-problem
    verdicts, evaluations and final figures are in the JSON; the per-run counts (wall time, sampled
    tokens, attempts graded) only as their row's, spread evenly over its seeds. The JSON's suite must
    have had exactly these settings and these seeds."""
    from learner.statistics import decode_outcomes

    result = json.loads(path.read_text())
    if result["settings"] != settings or result["seeds"] != seeds:
        raise ValueError(f"{path}: its runs had settings {result['settings']} and seeds {result['seeds']}, this suite "
                         f"{settings} and {seeds}: they do not make one table")
    problems = decode_outcomes(result["outcomes"])
    runs, n = {}, len(seeds)
    for row in result["rows"]:
        for i, seed in enumerate(seeds):
            name = f"{row['method']}-s{seed}"
            share = lambda total: total // n + (i < total % n)  # noqa: E731  (the seeds' shares add up to the total)
            runs[(row["method"], seed)] = {
                "seed": seed, "final": {k: row["per_seed"][k][i] for k in METRICS}, "steps": row["steps"],
                "wall_s": row["wall_s"]["total"] / n, "sampled_tokens": row["sampled_tokens"]["mean"],
                **result["curves"][name], "problems": problems[name],
                "graded_in_training": share(row["graded_in_training"]),
                "flagged_in_training": {k: share(v) for k, v in row["flagged_in_training"].items()},
            }
    return runs


def aggregate(method: str, summaries: list[dict]) -> dict:
    row: dict = {"method": method, "label": label(method), "seeds": [s["seed"] for s in summaries]}
    for key in METRICS:
        values = np.array([s["final"][key] for s in summaries])
        row[key] = {"mean": round(float(values.mean()), 2), "std": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 2)}
    row["per_seed"] = {key: [round(s["final"][key], 2) for s in summaries] for key in METRICS}
    row["steps"] = summaries[0]["steps"]
    row["graded_in_training"] = sum(s.get("graded_in_training", 0) for s in summaries)
    row["flagged_in_training"] = {k: sum(s.get("flagged_in_training", {}).get(k, 0) for s in summaries) for k in FLAGGED}
    row["sampled_tokens"] = {"mean": float(np.mean([s["sampled_tokens"] for s in summaries]))}
    row["wall_s"] = {"mean": round(float(np.mean([s["wall_s"] for s in summaries])), 1),
                     "total": round(float(np.sum([s["wall_s"] for s in summaries])), 1)}
    return row


def markdown_table(rows: list[dict], header: str) -> str:
    names = ["Acc@t1", "Acc@t2", "Δ(t1,t2)", "Δi→c", "Δc→i", "attempt 2 = attempt 1", "steps", "wall s / run"]
    lines = [header, "", "| method | " + " | ".join(names) + " |", "| --- " * (len(names) + 1) + "|"]
    for r in rows:
        cells = [f"{r[k]['mean']:.1f} ± {r[k]['std']:.1f}" for k in METRICS]
        cells[2] = f"**{r['delta']['mean']:+.1f}** ± {r['delta']['std']:.1f}"
        cells += [str(r["steps"]), f"{r['wall_s']['mean']:.0f}"]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    trained = [r for r in rows if r["graded_in_training"]]
    if trained:  # what the grader flagged among the attempts graded in training, all seeds together
        lines += ["", "Attempts graded in training, all seeds, and those the grader flagged (" + " / ".join(FLAGGED) + "):"]
        lines += [f"- {r['label']}: {r['graded_in_training']} graded, flagged "
                  + " / ".join(str(r["flagged_in_training"][k]) for k in FLAGGED) for r in trained]
    return "\n".join(lines) + "\n"


def add_statistics(rows: list[dict], runs: dict[tuple[str, int], dict], seeds: list[int], n_boot: int = 2000) -> list[dict]:
    """Adds each row's 95% bootstrap CIs (over problems and seeds, learner/statistics.py) and returns
    SCoRe's paired comparisons with every other method on Δ and Acc@t2 (none without a score row)."""
    from learner.statistics import bootstrap_ci, outcome_arrays, paired_difference

    arrays = outcome_arrays({r["method"]: [runs[(r["method"], s)]["problems"] for s in seeds] for r in rows})
    for r in rows:
        r["ci95"] = bootstrap_ci(*arrays[r["method"]], n_boot=n_boot)
        r["problems"] = int(arrays[r["method"]][0].shape[1])
    # every SCoRe run (one per learning rate of a grid) against every other method's; each SCoRe variant
    # with the pair term against every method, the variants before it included
    leads = ("score", "score_pairs", "score_pairs_episode")
    lead = lambda r: split_variant(r["method"])[0]  # noqa: E731
    return [{"score": s["method"], "method": r["method"], "label": f"{s['label']} vs {r['label']}",
             **paired_difference(arrays[s["method"]], arrays[r["method"]], n_boot=n_boot)}
            for s in rows if lead(s) in leads
            for r in rows if lead(r) not in leads[leads.index(lead(s)):]]


def statistics_tables(rows: list[dict], comparisons: list[dict]) -> str:
    """The CI table and SCoRe's paired comparisons, as markdown."""
    names = ["Acc@t1", "Acc@t2", "Δ(t1,t2)", "Δi→c", "Δc→i"]
    lines = [f"95% confidence intervals, bootstrap over {rows[0]['problems']} problems and the seeds "
             "(2000 draws, percentile):", "", "| method | " + " | ".join(names) + " |", "| --- " * (len(names) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(
            f"{r['ci95'][k]['value']:.1f} [{r['ci95'][k]['lo']:.1f}, {r['ci95'][k]['hi']:.1f}]" for k in METRICS[:5]) + " |")
    if comparisons:
        lines += ["", "SCoRe minus each method, paired bootstrap over the same problems and seeds: difference "
                  "[95% CI], and the fraction of draws where SCoRe is not ahead:", "",
                  "| comparison | Δ(t1,t2) | Acc@t2 |", "| --- | --- | --- |"]
        for c in comparisons:
            lines.append(f"| {c['label']} | " + " | ".join(
                f"{c[k]['diff']:+.1f} [{c[k]['lo']:+.1f}, {c[k]['hi']:+.1f}] (p {c[k]['p_not_greater']:.3f})"
                for k in ("delta", "acc_t2")) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], runs: dict[tuple[str, int], dict], out: Path, suite: str) -> None:
    """<suite>_training_curves.png and <suite>_deltas.png in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # held-out Acc@t1 / Acc@t2 over training steps for SCoRe, its pair-term variants and their ablations (mean over seeds)
    two_stage = ("score", "score_pairs", "no_shaping", "no_shaping_pairs", "score_pairs_episode", "no_shaping_pairs_episode")
    one_stage = ("no_stage1", "no_stage1_pairs", "no_stage1_pairs_episode")
    curves = [r["method"] for r in rows if split_variant(r["method"])[0] in two_stage + one_stage]
    if curves:
        # three panels a row: the reported table has nine curves, too wide for one row
        cols = min(3, len(curves))
        rows_of_panels = -(-len(curves) // cols)
        fig, axes = plt.subplots(rows_of_panels, cols, figsize=(5.2 * cols, 4 * rows_of_panels), sharey=True, squeeze=False)
        for ax in axes.flat[len(curves):]:
            ax.set_visible(False)
        for ax, method in zip(axes.flat, curves):
            seeds = sorted(s for m, s in runs if m == method)
            steps = [e["step"] for e in runs[(method, seeds[0])]["evals"]]
            for key, name, color in (("acc_t1", "Acc@t1", "tab:blue"), ("acc_t2", "Acc@t2", "tab:orange")):
                vals = np.array([[e[key] for e in runs[(method, s)]["evals"]] for s in seeds])
                mean, std = vals.mean(0), vals.std(0)
                ax.plot(steps, mean, marker="o", color=color, label=name)
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
            stage2 = next((r["stage1_steps"] for r in rows if r["method"] == method and "stage1_steps" in r), None)
            if split_variant(method)[0] in two_stage and stage2:
                ax.axvline(stage2, color="grey", linestyle=":", label="Stage II starts")
            ax.set(xlabel="RL step", ylabel="held-out accuracy, greedy (%)")
            ax.set_title(f"{label(method)} ({len(seeds)} seeds)", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{suite}_training_curves.png", dpi=100)
        plt.close(fig)

    # the table as bars: Δ(t1,t2), Δi→c, Δc→i per method, with the spread over seeds
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(rows))
    for i, (key, name) in enumerate((("delta", "Δ(t1,t2)"), ("delta_i2c", "Δi→c"), ("delta_c2i", "Δc→i"))):
        ax.bar(x + (i - 1) * 0.27, [r[key]["mean"] for r in rows], 0.27, yerr=[r[key]["std"] for r in rows], capsize=3, label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=15, ha="right", fontsize=8)
    ax.set(ylabel="percentage points (held-out, greedy)", title="self-correction by method (mean ± std over seeds)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{suite}_deltas.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner.experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="default", choices=sorted(SUITES))
    parser.add_argument("--quick", action="store_true", help="same as --suite quick")
    parser.add_argument("--methods", help="comma-separated subset of the suite's methods")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the suite's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra RunConfig setting for every run (after the suite's)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs side by side (one core each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--lrs", help="comma-separated learning-rate grid, the same for every trained method "
                        "(default: the suite's; each method runs as method@lr)")
    parser.add_argument("--report", action="store_true", help="the final run of a frozen recipe: evaluate on the "
                        "reported slice (held-out problems 0-999); without it the suite evaluates on validation "
                        "(1000-1999) and refuses the reported slice")
    parser.add_argument("--save-models", action="store_true", help="write each run's trained policy to "
                        "<run>/model (Hugging Face format), e.g. to start another run from it with model.path")
    parser.add_argument("--with-runs-from", metavar="SUITE_JSON", help="put the runs of an earlier suite's JSON in the "
                        "table too, read from the JSON (its run directories may be gone); it must have had this "
                        "suite's settings and seeds")
    parser.add_argument("--out", help="where the table, JSON and plots go (default: the runs directory)")
    parser.add_argument("--runs-dir", help="where each run's metrics and logs go (default: runs/experiment-<suite>-<time>); "
                        "runs already finished there with the same configuration are reused, not run again")
    args = parser.parse_args(argv)
    suite_name = "quick" if args.quick else args.suite
    suite = SUITES[suite_name]
    # tuning evaluates on validation unless told otherwise; the reported run on the reported slice
    # (the whole 1000-problem slice, unless a suite or --set says fewer)
    slice_setting = [f"task.eval_offset={REPORTED_SLICE[0] if args.report else VALIDATION_OFFSET}",
                     f"task.eval_size={REPORTED_SLICE[1] - REPORTED_SLICE[0]}"]
    settings = slice_setting + suite["settings"] + args.overrides
    lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else suite.get("lrs")
    methods = variants(args.methods.split(",") if args.methods else suite["methods"], lrs)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else suite["seeds"]
    base_cfg = load_config(None, settings)
    check_eval_slice(base_cfg, args.report)  # before any work: a refused suite costs nothing
    run_root = Path(args.runs_dir or f"runs/experiment-{suite_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out = Path(args.out) if args.out else run_root  # the table, JSON and plots; each run's files stay in run_root
    out.mkdir(parents=True, exist_ok=True)

    from graders.registry import make_task
    from learner.driver.loop import held_out_label
    from learner.driver.startup import log
    from learner.model.warmstart import ensure_base_model
    from learner.statistics import encode_outcomes

    base_dir = str(ensure_base_model(base_cfg, make_task(base_cfg.task.name, base_cfg.task.params), log))
    earlier = runs_from_json(Path(args.with_runs_from), settings, seeds) if args.with_runs_from else {}
    if earlier:  # the earlier suite's methods and this one's, in the suite's order of methods
        order_of = {m: i for i, m in enumerate(suite["methods"])}
        methods = sorted(dict.fromkeys([m for m, _ in earlier] + methods), key=lambda m: order_of.get(split_variant(m)[0], len(order_of)))
    configs = {(m, s): run_config(settings, m, s) for m in methods for s in seeds}
    for m in methods:
        if replaced := replaced_settings(args.overrides, base_cfg, configs[m, seeds[0]]):
            log(f"{m}: its own settings replace {', '.join(replaced)}")
    # longest first (the base row has no training) so that the pool's tail is short
    order = sorted(configs, key=lambda ms: -(configs[ms].score.stage1_steps + configs[ms].score.stage2_steps))
    runs: dict[tuple[str, int], dict] = dict(earlier)
    for m, s in order:
        if (m, s) in runs:
            continue
        run_dir = run_root / f"{m}-s{s}"
        if args.save_models and not (run_dir / "model" / "config.json").is_file():
            continue  # its policy is wanted, and was not saved: run it again
        if (summary := finished_run(configs[m, s], run_dir)) is not None:
            runs[(m, s)] = summary
            log(f"{m} seed {s}: finished before in {run_dir}, reused")
    jobs = [(m, s, configs[m, s].model_dump_json(), base_dir, str(run_root / f"{m}-s{s}"), args.threads, args.save_models)
            for m, s in order if (m, s) not in runs]
    at_once, reused = max(1, min(args.jobs, len(jobs))), len(runs)
    log(f"suite {suite_name}: {len(methods)} methods x {len(seeds)} seeds, {len(jobs)} to run, {at_once} at a time -> {out}")
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(at_once, maxtasksperchild=1) as pool:
        for method, seed, summary in pool.imap_unordered(_worker, jobs):
            runs[(method, seed)] = summary
            f = summary["final"]
            log(f"{method} seed {seed}: Acc@t1 {f['acc_t1']:.1f} Acc@t2 {f['acc_t2']:.1f} Δ {f['delta']:+.1f} "
                f"(i→c {f['delta_i2c']:.1f}, c→i {f['delta_c2i']:.1f}, same {f['same_answer']:.0f}%) {summary['wall_s']:.0f}s")
    wall = time.perf_counter() - started

    rows = []
    for m in methods:
        row = aggregate(m, [runs[(m, s)] for s in seeds])
        mcfg = configs[m, seeds[0]]
        row["stage1_steps"], row["stage2_steps"] = mcfg.score.stage1_steps, mcfg.score.stage2_steps
        row["settings"] = method_overrides(m, base_cfg)
        rows.append(row)
    header = (
        f"{held_out_label(base_cfg.task).capitalize()}, greedy, % of problems; mean ± std over seeds "
        f"{seeds}. Suite `{suite_name}`, {len(methods) * len(seeds)} runs"
        + (f" ({reused} finished by earlier invocations and reused" + (f", {len(earlier)} of them read from {args.with_runs_from}"
                                                                         if earlier else "") + ")" if reused else "")
        # this invocation's wall time only says something when it ran the runs; the runs' own times always do
        + (f", {len(jobs)} run here in {wall / 60:.1f} min wall ({at_once} at a time on {os.cpu_count()} cores)" if jobs else "")
        + f"; the runs' own times add up to {sum(r['wall_s'] for r in runs.values()) / 60:.0f} min."
    )
    comparisons = add_statistics(rows, runs, seeds)
    table = markdown_table(rows, header) + "\n" + statistics_tables(rows, comparisons)
    result = {
        "suite": suite_name, "command": "python -m learner.experiment " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": settings, "config": base_cfg.model_dump(mode="json"), "base_model": base_dir, "runs_dir": str(run_root),
        "seeds": seeds, "lrs": lrs, "report": args.report, "wall_s": round(wall, 1), "cores": os.cpu_count(), "jobs": at_once, "reused": reused,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "rows": rows, "score_vs": comparisons,
        "curves": {f"{m}-s{s}": {"evals": r["evals"], "train_reward": r["train_reward"]} for (m, s), r in sorted(runs.items())},
        # every run's per-problem verdicts, compactly: the intervals can be recomputed from this file alone
        "outcomes": encode_outcomes({f"{m}-s{s}": r["problems"] for (m, s), r in sorted(runs.items())}),
    }
    (out / f"{suite_name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{suite_name}.md").write_text(table)
    plot(rows, runs, out, suite_name)
    print("\n" + table, flush=True)
    log(f"suite {suite_name} done " + (f"in {wall / 60:.1f} min" if jobs else f"(all {reused} runs reused)")
        + f": {out}/{suite_name}.json, {suite_name}.md, "
        f"{suite_name}_training_curves.png, {suite_name}_deltas.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
