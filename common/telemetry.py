"""Prometheus metrics of every component, recorded with Ray's metrics API (`ray.util.metrics`).

Why Ray's API rather than prometheus-client: a metric recorded in any Ray process (the driver,
a rollout or grader actor) is served by its node's metrics agent on one port per
node (`ray start --metrics-export-port`), and the head writes a Prometheus service-discovery file
that lists every node. Actors need no HTTP server or port of their own, and a cluster is scraped
through one file_sd entry wherever the actors land. The costs, which the README spells out: Ray
prefixes every name with `ray_` (`score_step` is scraped as `ray_score_step`, a counter
`score_grades` as `ray_score_grades_total`), adds its own labels (SessionName, NodeAddress,
WorkerId, ...), and ships values every RAY_metrics_report_interval_ms (10 s by default).

Outside Ray (unit tests of the plain classes) recording is a no-op. Metrics are created on first
use in each process: the rollout and grader processes need only their own.
"""
from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Iterator, Literal

PREFIX = "score_"

# Where a second goes in a training step: the training loop's record key for each phase.
STEP_PHASES = {"rollout": "rollout_s", "grading": "grading_s", "learner": "learner_s", "weight_sync": "sync_s"}


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, so a Spec keys the metric cache
class Spec:
    """One metric: its name without the prefix, its help, and how to read it from a record.

    `reads` maps a record key (with `{split}` filled in for the self-correction metrics) to the
    labels of the series it sets; a metric without labels reads one key with `{}`.
    """

    name: str
    help: str
    labels: tuple[str, ...] = ()
    reads: tuple[tuple[str, dict[str, str]], ...] = ()
    kind: Literal["gauge", "counter", "histogram"] = "gauge"
    buckets: tuple[float, ...] = ()

    @property
    def exported(self) -> str:
        """The name Prometheus sees: Ray adds `ray_`, a counter gets `_total` (a histogram the usual
        `_bucket` / `_sum` / `_count` series under this name)."""
        return f"ray_{PREFIX}{self.name}" + ("_total" if self.kind == "counter" else "")


def _per_attempt(key: str) -> tuple[tuple[str, dict[str, str]], ...]:
    return tuple((key.replace("{t}", t), {"attempt": t}) for t in ("1", "2"))


# The paper's five metrics plus the copy rate, for the training samples (record keys
# `train_acc_t1`, ...) and for the greedy held-out evaluation (`acc_t1`, ...).
SELF_CORRECTION = (
    Spec("accuracy_percent", "Accuracy@t1 / Accuracy@t2: % of traces whose attempt is right.",
         ("split", "attempt"), _per_attempt("{split}acc_t{t}")),
    Spec("delta_percent", "Delta(t1,t2) = Acc@t2 - Acc@t1, percentage points.", ("split",), (("{split}delta", {}),)),
    Spec("delta_i2c_percent", "Delta i->c: % of traces wrong at attempt 1 and right at attempt 2.",
         ("split",), (("{split}delta_i2c", {}),)),
    Spec("delta_c2i_percent", "Delta c->i: % of traces right at attempt 1 and wrong at attempt 2.",
         ("split",), (("{split}delta_c2i", {}),)),
    Spec("same_answer_percent", "% of traces whose attempt 2 repeats attempt 1 (the collapse signal).",
         ("split",), (("{split}same_answer", {}),)),
)

# Read from the training loop's record of each step (learner stats are rank 0's, which are
# the group's: they are all-reduced, so one process exports them, not every rank).
TRAIN_STEP = (
    Spec("reward", "Mean sampled reward of the last step, per attempt (0-1).", ("attempt",), _per_attempt("reward_t{t}")),
    Spec("kl", "KL(pi || pi_ref) per trace of the last step, per attempt (k3 estimate, nats).",
         ("attempt",), _per_attempt("kl_t{t}")),
    Spec("policy_loss", "Policy-gradient part of the SCoRe loss, last step.", reads=(("policy_loss", {}),)),
    Spec("kl_penalty", "KL part of the SCoRe loss (beta-weighted), last step.", reads=(("kl_penalty", {}),)),
    Spec("pair_loss", "The auxiliary Pair-SFT term of the loss (score.pair_coef-weighted), last step; 0 when off.",
         reads=(("pair_loss", {}),)),
    Spec("grad_norm", "Global gradient norm before clipping, last step.", reads=(("grad_norm", {}),)),
    Spec("learning_rate", "The policy optimiser's learning rate.", reads=(("lr", {}),)),
    Spec("stage", "SCoRe stage being trained (1 or 2).", reads=(("stage", {}),)),
    Spec("step", "Training steps done (both stages).", reads=(("step", {}),)),
    Spec("policy_version", "Version of the policy the rollout actors hold.", reads=(("policy_version", {}),)),
    Spec("logprob_mismatch_abs", "Mean |log p_learner - log p_engine| over the sampled tokens, last step.",
         reads=(("logprob_abs_diff", {}),)),
    Spec("logprob_mismatch_kl", "KL(engine || learner) per sampled token (k3), last step.",
         reads=(("logprob_kl", {}),)),
    Spec("learner_tokens_per_second", "Tokens the learner trained on per second of its update, last step.",
         reads=(("learner_tokens_per_s", {}),)),
    Spec("importance_ratio", "pi_learner / pi_sampler over the last step's sampled tokens, before truncation (mean, max).",
         ("stat",), (("is_ratio_mean", {"stat": "mean"}), ("is_ratio_max", {"stat": "max"}))),
    Spec("importance_clipped_fraction", "Fraction of the last step's sampled tokens whose importance ratio was truncated.",
         reads=(("is_clipped_frac", {}),)),
    Spec("stale_batches_dropped", "Rollout batches dropped as more than cluster.max_policy_lag versions old, since the start.",
         reads=(("batches_stale_total", {}),)),
    Spec("traces_left_out", "Traces left out of training since the start because a grade in their prompt group was "
         "never given (the grader failed, even after retries): never trained on as wrong answers.",
         reads=(("traces_left_out_total", {}),)),
    Spec("step_seconds", "Wall time of the last training step.", reads=(("step_s", {}),)),
    Spec("step_phase_seconds", "Wall time of the last step's phases: waiting for rollouts, for grades (0 when the "
         "pipeline hides them), the learner's update, the weight sync (they add up to about step_seconds).",
         ("phase",), tuple((key, {"phase": phase}) for phase, key in STEP_PHASES.items())),
)

ROLLOUT_TOKENS_PER_SECOND = Spec("rollout_tokens_per_second", "Tokens generated per second by one rollout actor, last batch.", ("actor",))
BUFFER_DEPTH = Spec("trace_buffer_depth", "Trace batches waiting in the trace buffer.")
POLICY_VERSION_LAG = Spec("policy_version_lag", "Policy versions between the learner and the batches it last took.")
GRADES = Spec("grades", "Grades given, by status (pass, fail, timeout, error, sandbox_violation).", ("status",),
              kind="counter")
# Buckets from an exact-match check (microseconds) to a sandboxed program that runs into its time
# limit (tens of seconds).
GRADE_LATENCY = Spec("grade_latency_seconds", "Time to grade one completion.", kind="histogram",
                     buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))

# The serving API (actors/serve/): recorded in each replica.
SERVE_REQUESTS = Spec("serve_requests", "Requests to the serving API, by route and HTTP status code.", ("route", "status"),
                      kind="counter")
# Buckets from one short plain attempt (tens of ms) to a batch of long multi-attempt requests.
SERVE_LATENCY = Spec("serve_request_latency_seconds", "Time to answer one successful request (all its attempts), by the "
                     "number of attempts it asked for.", ("attempts",), kind="histogram",
                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
SERVE_TOKENS = Spec("serve_tokens_generated", "Tokens generated for requests, by attempt (1 = the first answer).",
                    ("attempt",), kind="counter")
SERVE_REVISIONS = Spec("serve_revisions", "Choices answered in more than one attempt, by whether the last attempt's text "
                       "differs from the first's (changed, same).", ("last_vs_first",), kind="counter")
SERVING = (SERVE_REQUESTS, SERVE_LATENCY, SERVE_TOKENS, SERVE_REVISIONS)

ALL = (*SELF_CORRECTION, *TRAIN_STEP, ROLLOUT_TOKENS_PER_SECOND, BUFFER_DEPTH, POLICY_VERSION_LAG, GRADES, GRADE_LATENCY,
       *SERVING)


def metrics_endpoints() -> list[str]:
    """What Prometheus scrapes: the metrics agent of every live node (needs a connected Ray)."""
    import ray

    return [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics" for n in ray.nodes() if n["Alive"]]


@cache
def _metric(spec: Spec):
    from ray.util import metrics

    if spec.kind == "counter":
        return metrics.Counter(PREFIX + spec.name, spec.help, tag_keys=spec.labels)
    if spec.kind == "histogram":
        return metrics.Histogram(PREFIX + spec.name, spec.help, boundaries=list(spec.buckets), tag_keys=spec.labels)
    return metrics.Gauge(PREFIX + spec.name, spec.help, tag_keys=spec.labels)


def _set(specs: tuple[Spec, ...], record: dict, split: str | None = None, key_prefix: str = "") -> None:
    """Set each spec's series from `record`. For the self-correction specs `split` labels the series
    and `key_prefix` is how the record names the values (`train_acc_t1` in a training record)."""
    split_label = {"split": split} if split else {}
    for spec in specs:
        for key, labels in spec.reads:
            _metric(spec).set(float(record[key.format(split=key_prefix)]), tags={**labels, **split_label})


def record(record: dict) -> None:
    """A metrics.jsonl record from the training loop (learner/driver/loop.py builds them): a
    training step's, or a greedy held-out evaluation's five metrics (and the copy rate)."""
    if record["kind"] == "train":
        _set(TRAIN_STEP, record)
        _set(SELF_CORRECTION, record, "train", key_prefix="train_")
    elif record["kind"] == "eval":
        _set(SELF_CORRECTION, record, "eval")


def record_rollout(tokens: int, seconds: float) -> None:
    """A rollout actor's last batch: tokens generated per second, labelled with the actor's id."""
    import ray

    # (asking for the runtime context outside Ray would start a local Ray)
    actor = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    _metric(ROLLOUT_TOKENS_PER_SECOND).set(tokens / max(seconds, 1e-9), tags={"actor": (actor or "driver")[:8]})


def record_buffer(depth: int, lag: int | None = None) -> None:
    """The trace buffer's depth; with `lag`, the policy lag of the batches just handed out."""
    _metric(BUFFER_DEPTH).set(float(depth))
    if lag is not None:
        _metric(POLICY_VERSION_LAG).set(float(lag))


def count_grades(statuses: list[str]) -> None:
    for status, n in Counter(statuses).items():
        _metric(GRADES).inc(n, tags={"status": status})


@contextmanager
def grade_timer() -> Iterator[None]:
    """Observe how long the body (grading one completion) takes."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _metric(GRADE_LATENCY).observe(time.perf_counter() - started)


def count_request(route: str, status: int) -> None:
    """One answered request of the serving API (errors included), by route and HTTP status."""
    _metric(SERVE_REQUESTS).inc(1, tags={"route": route, "status": str(status)})


def record_served(attempts: int, seconds: float, tokens_per_attempt: list[int], changed: list[bool]) -> None:
    """A successful request: its latency under the attempts it asked for, the tokens of each attempt
    (summed over its choices), and for each choice with 2+ attempts whether the last one changed the first."""
    _metric(SERVE_LATENCY).observe(seconds, tags={"attempts": str(attempts)})
    for attempt, tokens in enumerate(tokens_per_attempt, start=1):
        if tokens:
            _metric(SERVE_TOKENS).inc(tokens, tags={"attempt": str(attempt)})
    for outcome, n in Counter("changed" if c else "same" for c in changed).items():
        _metric(SERVE_REVISIONS).inc(n, tags={"last_vs_first": outcome})
