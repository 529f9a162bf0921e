"""The run configuration: typed, strict, loadable from YAML, importable without torch.

Every section forbids unknown keys, so a typo (`alfa: 10`) is an error that names the key and
the keys allowed there, never a silently ignored setting. Values are never coerced: `alpha: true`,
`seed: "7"` and `prompts_per_step: 8.0` are errors too. `load_config` then checks the paths the run
will use (output_dir, model.path, model.cache_dir) before anything starts.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    """A configuration that cannot run; the message names every offending key and value."""


class _Section(BaseModel):
    # strict: no coercion (true -> 1.0, "7" -> 7, 8.0 -> 8 are refused); an int is still a valid float
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True, frozen=False)


class ModelConfig(_Section):
    path: str | None = Field(
        None, description="A Hugging Face model directory; unset = the locally built tiny model."
    )
    hidden_size: int = Field(128, ge=32, description="Tiny model width.")
    num_layers: int = Field(4, ge=1, le=48, description="Tiny model depth.")
    num_heads: int = Field(4, ge=1, description="Attention heads; hidden_size/num_heads >= 32.")
    intermediate_size: int = Field(512, ge=16, description="Tiny model MLP width.")
    vocab_size: int = Field(512, ge=64, le=65536, description="Size of the locally trained BPE.")
    max_positions: int = Field(512, ge=64, description="Longest sequence (both attempts together).")
    cache_dir: str = Field(".cache/models", description="Where built and warm-started models live.")

    @model_validator(mode="after")
    def _head_dim(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads or self.hidden_size // self.num_heads < 32:
            raise ValueError(
                f"hidden_size={self.hidden_size} / num_heads={self.num_heads} must be a whole "
                "head_dim of at least 32 (vLLM's CPU attention needs it)"
            )
        return self


class WarmStartConfig(_Section):
    """Stage 0: supervised fine-tuning of the tiny model into a base policy."""

    max_steps: int = Field(2000, ge=0, description="Cap on SFT steps.")
    target_accuracy: float = Field(
        50.0, gt=0, le=100,
        description="Stop once greedy attempt-1 accuracy (%) on a training-distribution sample reaches this.",
    )
    check_every: int = Field(25, ge=1, description="Steps between accuracy checks.")
    batch_size: int = Field(64, ge=1, description="Sequences per SFT step (half first turns, half second).")
    lr: float = Field(3e-3, gt=0, le=1, description="AdamW learning rate (100-step warm-up).")
    seed: int = Field(0, description="Seeds the tokenizer corpus, initialisation and SFT data.")


def _task_param(value: Any) -> int | float | str:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    raise PydanticCustomError("task_param_type", "a task parameter is a number or a string")


# One validator, not the union int | float | str: a wrong value is one error, not one per member.
TaskParam = Annotated[int | float | str, PlainValidator(_task_param)]


class TaskConfig(_Section):
    name: str = Field("sort", description="A registered task: sort (built in), code, math, humaneval (graders/registry.py).")
    params: dict[str, TaskParam] = Field(
        default_factory=dict, description="Task-specific knobs, e.g. {min_len: 5, max_len: 8}."
    )
    eval_size: int = Field(256, ge=1, description="Held-out problems used for evaluation.")
    eval_offset: int = Field(
        0, ge=0, description="First held-out problem evaluated. Tune hyperparameters at another offset (a "
        "validation slice, e.g. 1000) than the one you report (0), so the reported numbers are not tuned on.",
    )


class ScoreConfig(_Section):
    """The SCoRe objective (learner/training/losses.py) and its optimisation."""

    method: Literal["score", "single_turn", "online_star", "star", "pair_sft"] = Field(
        "score",
        description="score: Stage I then Stage II; single_turn: RL on attempt 1 only; online_star: fine-tune on the "
        "policy's own (wrong, right) attempt pairs, re-sampled every step; star and pair_sft, the paper's offline "
        "baselines, fine-tune (no KL) on traces the base model samples before the first update: star on its "
        "successful revisions, pair_sft on each wrong first attempt followed by a correct response to the same "
        "problem. Baselines train stage1_steps + stage2_steps steps.",
    )
    stage1_steps: int = Field(50, ge=0, description="RL steps of Stage I (attempt 1 pinned by beta2).")
    stage2_steps: int = Field(20, ge=0, description="RL steps of Stage II (both attempts, shaped reward).")
    prompts_per_step: int = Field(32, ge=1, description="Problems per step; each gets samples_per_prompt traces.")
    samples_per_prompt: int = Field(4, ge=2, description="k; RLOO needs at least 2.")
    lr: float = Field(3e-4, gt=0, le=1, description="Adam learning rate of the policy (Stage I, and the baselines).")
    stage2_lr: float | None = Field(
        3e-5, gt=0, le=1,
        description="Stage II learning rate (absolute: set it with score.lr); unset = score.lr. Lower than Stage I's: "
        "a fast Stage II lets attempt 1 catch up with attempt 2 and closes the gap Stage I opened (docs/results/NOTES.md).",
    )
    alpha: float = Field(10.0, ge=0, description="Reward-shaping bonus on r2 - r1 (Stage II).")
    normalize_advantages: bool = Field(
        False,
        description="RL methods: divide each attempt's advantages by their standard deviation over the step's batch, "
        "so that both attempts weigh alike in the update (Stage II's shaped attempt-2 rewards span 1 + 2 alpha, "
        "attempt 1's 1; under grad_clip the wider term sets the update's direction alone).",
    )
    stage2_normalize_advantages: bool | None = Field(
        None, description="SCoRe's Stage II: normalize_advantages for that stage alone; unset = the same as Stage I.",
    )
    attempt2_baseline: Literal["prompt", "attempt1"] = Field(
        "prompt",
        description="Stage II's attempt-2 baseline. prompt: the shaped reward's leave-one-out mean over the prompt's "
        "other samples (RLOO). attempt1: also its part that attempt 1 fixed, -alpha * r1, subtracted exactly (a "
        "baseline may depend on attempt 2's prompt, which holds attempt 1): the same expected gradient, without the "
        "noise of alpha * (r1 - the others' r1) on every attempt-2 token; the advantage is (1 + alpha) * RLOO(r2).",
    )
    stage2_credit: Literal["attempt", "episode"] = Field(
        "attempt",
        description="What SCoRe's Stage II credits attempt 1's tokens with. attempt: r1, its own reward (discount 0; the "
        "bonus then reaches attempt 2 alone and, in expectation, only weighs it 1 + alpha). episode: the episode's "
        "return r1 + r_hat2 = (1 - alpha) * r1 + (1 + alpha) * r2 (discount 1), so the bonus acts on attempt 1 too: "
        "it pays a first attempt that a right second one follows, and docks one that a wrong second one follows.",
    )
    pair_coef: float = Field(
        0.0, ge=0,
        description="SCoRe only (not in the paper): weight of an auxiliary Pair-SFT term at every step, on rows made "
        "from the step's own graded batch (each wrong first attempt followed by a right response to the same problem "
        "from the batch; -log pi of that response, averaged over the rows; no KL). No extra samples. 0 = off.",
    )
    beta1: float = Field(0.01, ge=0, description="KL weight on every attempt.")
    beta2: float = Field(0.5, ge=0, description="Stage I KL weight on attempt 1.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (the learner scores at it too).")
    max_new_tokens: int = Field(48, ge=1, description="Longest attempt, in tokens.")
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    importance_ratio_cap: float | None = Field(
        2.0, ge=1,
        description="Off-policy correction when cluster.max_policy_lag >= 1: each sampled token's policy-gradient term "
        "is weighted by min(pi_learner / pi_sampler, cap), truncated importance sampling; unset = no correction.",
    )

    @model_validator(mode="after")
    def _pairs_with_score(self) -> "ScoreConfig":
        if self.pair_coef and self.method != "score":
            raise ValueError(f"pair_coef={self.pair_coef} is a term of SCoRe's loss; method={self.method!r} has none "
                             "(pair_sft is Pair-SFT alone)")
        return self


class EvalConfig(_Section):
    every_steps: int = Field(20, ge=0, description="Evaluate on the held-out split every N steps; 0 = start and end only.")
    max_new_tokens: int | None = Field(None, ge=1, description="Unset = score.max_new_tokens.")


class CheckpointConfig(_Section):
    every_steps: int = Field(
        10, ge=0, description="Save a resumable checkpoint (policy, optimizer, loop state) every N training steps and "
        "after the last one; 0 = only after the last one.")
    keep_last: int = Field(2, ge=1, description="Resumable checkpoints kept; older ones are deleted.")


def _count(value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError("an actor count is a whole number >= 1 or 'auto'")


# An actor count: a number, or `auto` = as many as the nodes offering that group's resources hold.
Count = Annotated[int | Literal["auto"], PlainValidator(_count)]


class ClusterConfig(_Section):
    ray_address: str | None = Field(
        None, description="Unset: attach to RAY_ADDRESS if set (ray job submit), else start a local Ray."
    )
    engine: Literal["vllm", "transformers"] = Field(
        "vllm", description="Rollout generation engine: vLLM (CPU build here, CUDA on GPUs), or plain transformers."
    )
    weight_sync: Literal["object_store", "collective"] = Field(
        "object_store",
        description="How new weights reach rollout actors: object_store (one put, every actor loads it), or "
        "collective (a broadcast group of learner rank 0 and the engines: NCCL when both hold GPUs, else gloo).",
    )
    weight_sync_timeout_s: float = Field(
        300, gt=0, description="Deadline of every weight broadcast (either backend); a dead or hung peer is an error, not a hang."
    )
    rollout_alive_timeout_s: float = Field(
        30, gt=0, description="While the driver waits on a rollout actor, it asks it this often whether it is alive "
        "(answered on a thread of its own, whatever it is sampling); one that gives no answer within this is replaced as hung."
    )
    redis_url: str | None = Field(
        None,
        description="The run registry, e.g. redis://host:6379/0; unset = a local redis-server keeping its data "
        "in <output_dir>/.redis.",
    )
    rollout_actors: Count = Field(
        1, description="Rollout actors; a step's problems are split across them. auto: see the README's scaling section."
    )
    grader_actors: Count = Field(1, description="Grader actors in the pool.")
    learner_workers: Count = Field(1, description="FSDP2 ranks; the batch's rows are split across them.")
    learner_micro_batch_tokens: int = Field(
        2048, ge=0,
        description="Padded tokens per learner micro-batch: a rank's rows, sorted by length, in chunks that pad only to "
        "their own longest row, gradients accumulated (less padding, bounded memory); 0 = all its rows at once.",
    )
    learner_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="What the learner's forward and backward passes compute in. bfloat16 (for GPUs): FSDP2 mixed "
        "precision; master weights, optimizer state and gradient reduction stay float32.",
    )
    reference_on: Literal["rollout", "learner"] = Field(
        "rollout",
        description="Where the frozen reference model scores training traces for the KL terms: rollout = each rollout "
        "actor right after sampling (off the learner's critical path while rollouts run ahead; the learner holds no "
        "reference copy), learner = every learner rank in its update.",
    )
    rollout_cpus: float = Field(1, ge=0, description="Ray CPUs each rollout actor reserves.")
    rollout_gpus: float = Field(0, ge=0, description="Ray GPUs each rollout actor reserves.")
    grader_cpus: float = Field(1, ge=0, description="Ray CPUs each grader actor reserves.")
    learner_cpus: float = Field(1, ge=0, description="Ray CPUs each learner rank reserves.")
    learner_gpus: float = Field(0, ge=0, description="Ray GPUs each learner rank reserves (>0 selects NCCL).")
    rollout_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each rollout actor requests, e.g. {rollout: 1}: pins it to the node group offering them.",
    )
    grader_resources: dict[str, float] = Field(default_factory=dict, description="The same for each grader actor.")
    learner_resources: dict[str, float] = Field(default_factory=dict, description="The same for each learner rank.")
    torch_threads: int = Field(
        0, ge=0,
        description="Threads per rollout/learner process; 0 = the CPUs it reserves (rollout_cpus, learner_cpus), at least 1.",
    )
    grade_timeout_s: float = Field(
        120, gt=0, description="Deadline for one grader actor's part of a batch; past it the actor is replaced and "
        "the part graded again elsewhere.")
    max_restarts: int = Field(
        3, ge=0, description="Recoveries a run makes within its job: a dead or hung rollout actor is replaced (no step "
        "lost); a dead learner rank has every actor rebuilt from the last checkpoint. Past that the run fails (and "
        "--resume continues it).")
    grade_retries: int = Field(
        2, ge=0, description="Times a part of a batch whose grader actor died or missed the deadline is graded again "
        "on another actor; after that its traces are left out of training (ungraded), never scored 0.")
    buffer_capacity: int = Field(
        16, ge=1,
        description="Rollout batches (one per rollout actor per step) the trace buffer holds, in flight or waiting "
        "for the learner; when full, no further rollouts are requested.",
    )
    max_policy_lag: int = Field(
        1, ge=0,
        description="How many updates behind the learner a trained batch's policy may be: rollouts run this many steps "
        "ahead of the learner. 0 = strictly on-policy, rollouts and learner take turns.",
    )
    metrics_export_port: int | None = Field(
        None, ge=1, le=65535,
        description="Local Ray only: the port its metrics agent serves Prometheus metrics on; unset = a free one "
        "(logged). On a cluster: `ray start --metrics-export-port`.",
    )

    @model_validator(mode="after")
    def _buffer(self) -> "ClusterConfig":
        if isinstance(self.rollout_actors, int) and self.buffer_capacity < self.rollout_actors:
            raise ValueError(
                f"buffer_capacity={self.buffer_capacity} cannot hold one step's batches (one per rollout actor: "
                f"rollout_actors={self.rollout_actors})"
            )
        return self

    @model_validator(mode="after")
    def _placement(self) -> "ClusterConfig":
        for group, count in (("rollout", "rollout_actors"), ("grader", "grader_actors"), ("learner", "learner_workers")):
            resources = getattr(self, f"{group}_resources")
            reserved = sorted(set(resources) & {"CPU", "GPU", "memory", "object_store_memory"})
            if reserved:
                raise ValueError(f"{group}_resources: {reserved} are set by {group}_cpus / {group}_gpus, not here")
            if any(amount <= 0 for amount in resources.values()):
                raise ValueError(f"{group}_resources: every amount must be > 0, got {resources}")
            if getattr(self, count) == "auto" and not resources:
                raise ValueError(
                    f"{count}=auto counts the actors that fit on the nodes offering {group}_resources, "
                    f"so {group}_resources must name a custom resource, e.g. {{{group}: 1}}"
                )
        return self


class TrackingConfig(_Section):
    """Experiment trackers that get the run's config and every record of metrics.jsonl (learner/tracking/loggers/)."""

    loggers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="Trackers the run also logs to, e.g. [tensorboard, wandb, mlflow]: each an optional package "
        "(pip install -e '.[trackers]'); metric names <kind>/<key> of metrics.jsonl (train/reward_t1, eval/acc_t1), "
        "x-axis the training step. Empty = metrics.jsonl and Prometheus only.",
    )
    project: str = Field("score-rl", min_length=1, description="W&B project and MLflow experiment the runs are logged under.")
    wandb_mode: Literal["offline", "online"] | None = Field(
        None, description="W&B mode; unset = $WANDB_MODE if set, else offline (files under the run directory, "
        "`wandb sync` uploads them later).",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking server or store; unset = $MLFLOW_TRACKING_URI if set, else a local SQLite "
        "store, <run_dir>/mlflow.db (artifacts in <run_dir>/mlartifacts).",
    )


class RunConfig(_Section):
    name: str = Field("score", description="Run name; the run directory is <output_dir>/<name>-<timestamp>.")
    output_dir: str = Field("runs", description="Where run directories are created.")
    seed: int = Field(0, description="Seeds problem sampling, generation and the learner.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    warmstart: WarmStartConfig = Field(default_factory=WarmStartConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the section that `loc` points into."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


# Validation errors that mean "a value of the wrong kind", and the kind the key wants.
_EXPECTED = {
    "float_type": "a number",
    "int_type": "a whole number",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a section (a mapping of its keys)",
    "task_param_type": "a number or a string",
}
_KINDS = {bool: "bool", int: "int", float: "float", str: "str", dict: "mapping", list: "list"}


def _as_written(value: Any) -> str:
    """A value as YAML would show it, with its kind: `bool true`, `str "7"`, `float 8.0`, `null`."""
    if value is None:
        return "null"
    return f"{_KINDS.get(type(value), type(value).__name__)} {json.dumps(value, default=str)}"


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(RunConfig, e["loc"]))
            lines.append(f"  {key}: unknown key (allowed here: {allowed})")
        elif e["type"] in _EXPECTED:
            lines.append(f"  {key}: expected {_EXPECTED[e['type']]}, got {_as_written(e.get('input'))}")
        else:
            lines.append(f"  {key}: got {e.get('input')!r}: {e['msg']}")
    return "invalid run configuration:\n" + "\n".join(lines)


class _Loader(yaml.SafeLoader):
    """yaml.safe_load's reading, except that `1e-5`, `3E4`, `.5e-3` (no dot or no exponent sign) are floats.

    PyYAML follows YAML 1.1, which reads them as strings; with strict types that would make
    `--set score.lr=1e-5` an error. YAML 1.2 (and every JSON reader) reads them as numbers, as here.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is a value, not a section")
        node = child
    node[leaf] = value


def parse_overrides(pairs: list[str]) -> dict:
    """`["score.alpha=5", "task.params.max_len=9"]` -> nested dict; values parse as YAML scalars."""
    tree: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. score.alpha=5")
        _set_dotted(tree, key.strip(), _load_yaml(raw) if raw else None)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _directory_problem(path: Path) -> str | None:
    """Why a run could not create or write into directory `path`, or None if it can."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{path} exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable"
        return None
    # it will be created (parents included): the nearest part of it that exists decides whether it can be
    ancestor = next(p for p in Path(os.path.abspath(path)).parents if os.path.exists(p))
    if not os.path.isdir(ancestor):
        return f"{path} cannot be created: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {ancestor} is not writable"
    return None


def _model_dir_problem(path: Path) -> str | None:
    """Why `path` is not a Hugging Face model directory (a config.json naming its model_type), or None."""
    if not os.path.isdir(path):
        what = "is not a directory" if os.path.exists(path) else "does not exist"
        return f"{path} {what}: expected a Hugging Face model directory holding config.json"
    config = path / "config.json"
    if not os.path.isfile(config):
        return f"{path} has no config.json: not a Hugging Face model directory"
    try:
        model_config = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        return f"{config} cannot be read: {exc}"
    except json.JSONDecodeError as exc:
        return f"{config} is not valid JSON: {exc}"
    if not isinstance(model_config, dict) or "model_type" not in model_config:
        return f"{config} names no model_type: not a Hugging Face model config"
    return None


def _path_problems(cfg: RunConfig) -> list[str]:
    """The paths this machine could not run `cfg` with, one line per key; found without starting anything."""
    problems = {"output_dir": _directory_problem(Path(cfg.output_dir))}
    if cfg.model.path is not None:
        problems["model.path"] = _model_dir_problem(Path(cfg.model.path))
    else:  # the cache is only read and written when the base model is the locally built one
        problems["model.cache_dir"] = _directory_problem(Path(cfg.model.cache_dir))
    return [f"  {key}: {problem}" for key, problem in problems.items() if problem]


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, check_paths: bool = True
) -> RunConfig:
    """Defaults < YAML file < `key=value` overrides. Raises ConfigError with every problem named.

    check_paths=False skips the checks of output_dir, model.path and model.cache_dir on this machine: for
    validating a config written for another one (e.g. a cluster's shared storage).
    """
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tree = _load_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top, got {type(tree).__name__}")
    tree = _merge(tree, parse_overrides(overrides or []))
    source = f" (from {path})" if path else ""
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc) + source) from None
    problems = _path_problems(cfg) if check_paths else []
    if problems:
        raise ConfigError("invalid run configuration:\n" + "\n".join(problems) + source)
    return cfg


def changed_keys(a: BaseModel, b: BaseModel, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs (e.g. `score.alpha`); a section is
    compared key by key, any other value (a dict of task params included) as a whole."""
    changed = []
    for name in type(a).model_fields:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, BaseModel):
            changed += changed_keys(x, y, f"{prefix}{name}.")
        elif x != y:
            changed.append(prefix + name)
    return sorted(changed)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
