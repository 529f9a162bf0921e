"""The training loop: the schedule (which objective for how many steps, when to evaluate) and the
step (draw problems, roll out, grade, check versions, train, sync, record), in one place.

How a step's parts are carried out is a backend's business (learner/driver/ray_backend.py: Ray
actors and ObjectRefs; learner/driver/local_backend.py: the same plain classes in one process);
the loop never asks which one it drives, so both run exactly the same steps.

The pipeline. Rollouts for step s may come from any policy version >= s - 1 - L, where
L = cluster.max_policy_lag and version v is the policy after v updates (step s trains version
s - 1). So the loop requests step s's rollouts as soon as version s - 1 - L has been sent to the
engines, L steps ahead of the learner: while the learner trains step s, the rollout actors sample
steps s + 1 ... s + L and the graders grade them. Each request carries that oldest acceptable
version; the engine waits for it if it must, and reports the version it really held, which the
trace buffer checks again before the learner trains. L = 0 is the strictly on-policy loop: request,
wait, train, sync, in turn. Every step's problems and sampling seed are drawn from the run's
generator in step order, whatever L, so a step trains on the same problems at every lag.
As in verl's one-step-off-policy and AReaL's bounded staleness, the bound is on versions, and
the learner never waits for more than its own step's data.
"""
from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol

import numpy as np

from actors.engines.base import SamplingParams
from graders.base import Task
from learner.driver.buffer import TraceBuffer
from learner.driver.metrics import trace_metrics
from learner.training.losses import Objective, stage_schedule
from protos import BatchInfo, Problem, RunConfig, rewards
from protos.batch import graded_groups


def held_out_label(task) -> str:
    """What an evaluation of this TaskConfig reads, for tables and logs: a validation slice says so."""
    if task.eval_offset:
        return f"held-out problems {task.eval_offset}-{task.eval_offset + task.eval_size - 1} (a validation slice)"
    return f"{task.eval_size} held-out problems (0-{task.eval_size - 1})"


@dataclass
class Request:
    """Rollouts to sample: k two-attempt traces for each problem, by weights of `min_version` or newer."""

    problems: list[Problem]
    k: int
    params: SamplingParams
    min_version: int = 0
    for_training: bool = True  # False: an evaluation's rollouts, never scored by the reference policy


def reference_kwargs(cfg: RunConfig) -> dict | None:
    """How the rollout side scores training batches with the reference policy (actors/reference.py):
    as the learner would (its temperature, its micro-batch budget). None: the learner scores them,
    as it always does for Pair-SFT, whose rows it makes itself (learner/training/pairs.py)."""
    if cfg.cluster.reference_on != "rollout" or cfg.score.method == "pair_sft":
        return None
    return {"temperature": cfg.score.temperature, "micro_batch_tokens": cfg.cluster.learner_micro_batch_tokens}


@dataclass
class InFlight:
    """A training step's rollouts, requested and not yet all in the trace buffer."""

    step: int
    request: Request
    shards: list[Any]
    collected: int = 0  # shards moved into the buffer so far, in order


class Backend(Protocol):
    """What the loop needs done. A request is split into shards (one per rollout actor), handles the
    backend understands (ObjectRefs, or finished work in-process)."""

    def shards_per_request(self, num_problems: int) -> int: ...

    def submit(self, request: Request) -> list[Any]: ...

    def ready(self, shard: Any) -> bool: ...

    def wait_rollouts(self, shards: list[Any]) -> None: ...

    def collect(self, shard: Any) -> tuple[BatchInfo, Any]: ...

    def train(self, objective: Objective, rewards: np.ndarray, batches: list[Any]) -> dict[str, float]: ...

    def sync(self, version: int) -> float: ...


class TrainLoop:
    def __init__(self, cfg: RunConfig, task: Task, backend: Backend, on_record: Callable[[dict], None],
                 log: Callable[[str], None], on_checkpoint: Callable[[int], None] | None = None):
        self.cfg, self.task, self.backend = cfg, task, backend
        self.on_record, self.log, self.on_checkpoint = on_record, log, on_checkpoint
        self.stop_requested: str | None = None  # set (e.g. by a signal handler) to stop at the next step boundary
        self.version = 0  # updates the learner has made = the newest policy version sent to the engines
        self.last_eval_problems: list[dict] = []  # the latest evaluation's rewards, per held-out problem
        self.rng = np.random.default_rng(cfg.seed)
        self.schedule = stage_schedule(cfg.score, off_policy=cfg.cluster.max_policy_lag > 0)
        self.total_steps = sum(n for _, n in self.schedule)
        shards = backend.shards_per_request(cfg.score.prompts_per_step) if backend else 1
        # The offline baselines train on the base model's samples: every step's rollouts are
        # requested at once, sampled by version 0 before the first update, and held until trained on.
        self.offline = any(objective.offline for objective, _ in self.schedule)
        self.lag = self.total_steps if self.offline else cfg.cluster.max_policy_lag
        capacity = max(cfg.cluster.buffer_capacity, self.total_steps * shards) if self.offline else cfg.cluster.buffer_capacity
        self.buffer = TraceBuffer(capacity, self.lag)
        if shards > self.buffer.capacity:
            raise ValueError(f"cluster.buffer_capacity={self.buffer.capacity} cannot hold one step's {shards} rollout "
                             "batches (one per rollout actor)")
        self.in_flight: deque[InFlight] = deque()
        self.requested_steps = 0  # training steps whose rollouts have been requested
        self.batches_requested = 0  # rollout batches requested for training, stale re-requests included
        self.traces_left_out = 0  # traces not trained on because a grade in their group was never given
        self.replay: deque[tuple[int, Request]] = deque()  # requests drawn before a checkpoint, made again on resume
        self.step_seconds: list[float] = []  # this process's steps and evaluations, for the log's time estimate
        self.eval_seconds: float | None = None

    # --- requests ---------------------------------------------------------------------------

    def train_request(self) -> Request:
        """A step's fresh training problems and its sampling (seeded from the run's generator)."""
        sc = self.cfg.score
        problems = self.task.train_problems(sc.prompts_per_step, self.rng)
        return Request(problems, sc.samples_per_prompt, SamplingParams(sc.max_new_tokens, sc.temperature, seed=int(self.rng.integers(2**31))))

    def eval_request(self) -> Request:
        """The held-out problems (task.eval_size of them from task.eval_offset), decoded greedily once
        each: the paper's evaluation protocol."""
        params = SamplingParams(self.cfg.eval.max_new_tokens or self.cfg.score.max_new_tokens, temperature=0.0)
        start = self.cfg.task.eval_offset
        return Request(self.task.eval_problems(start + self.cfg.task.eval_size)[start:], 1, params, self.version,
                       for_training=False)

    def _request_ahead(self) -> None:
        """Request the rollouts of every coming step the lag bound allows, while the buffer has room
        for a whole step (back-pressure: a full buffer holds rollouts back)."""
        shards = self.backend.shards_per_request(self.cfg.score.prompts_per_step)
        while (self.requested_steps < self.total_steps and self.requested_steps <= self.version + self.lag
               and self.buffer.free >= shards):
            step = self.requested_steps + 1
            if self.replay:
                replayed_step, request = self.replay.popleft()
                assert replayed_step == step, f"the checkpoint's request for step {replayed_step} came at step {step}"
            else:
                request = self.train_request()
            request.min_version = max(0, step - 1 - self.lag)
            self.buffer.reserve(shards)
            self.in_flight.append(InFlight(step, request, self.backend.submit(request)))
            self.batches_requested += shards
            self.requested_steps = step

    def _move_finished(self, current: InFlight | None = None) -> None:
        """Move finished, graded rollouts into the buffer in request order: every shard of the
        `current` step's (waiting for them), then those of later steps until the first unfinished."""
        for entry in ([current] if current else []) + list(self.in_flight):
            while entry.collected < len(entry.shards):
                shard = entry.shards[entry.collected]
                if entry is not current and not self.backend.ready(shard):
                    return
                self.buffer.put(*self.backend.collect(shard))
                entry.collected += 1

    def _step_batches(self, step: int) -> tuple[list[BatchInfo], list[Any], dict[str, float]]:
        """Step `step`'s graded batches from the buffer, each within the lag bound; a batch found too
        stale is dropped (counted) and its problems sampled again by the current policy. Returns
        the infos, the batch handles, and how long the step waited for rollouts and for grading."""
        started = time.perf_counter()
        self._request_ahead()
        entry = self.in_flight.popleft()
        assert entry.step == step, f"step {step}'s rollouts were never requested"
        self.backend.wait_rollouts(entry.shards[entry.collected:])
        rolled_out = time.perf_counter()
        needed = len(entry.shards)
        self._move_finished(current=entry)
        taken, dropped = self.buffer.take(self.version, needed)
        while dropped:  # never train on fewer traces than configured
            again = Request([p for info in dropped for p in problems_of(info, entry.request.problems)],
                            entry.request.k, entry.request.params, self.version)
            self.buffer.reserve(self.backend.shards_per_request(len(again.problems)))
            shards = self.backend.submit(again)
            self.batches_requested += len(shards)
            for shard in shards:
                self.buffer.put(*self.backend.collect(shard))
            more, dropped = self.buffer.take(self.version, len(shards))
            taken += more
        graded = time.perf_counter()
        for info, _ in taken:  # the buffer checked the lag; this is the loop's own guarantee
            if self.offline and info.policy_version != 0:
                raise RuntimeError(f"step {step}'s rollouts were sampled by policy v{info.policy_version}, but "
                                   f"score.method={self.cfg.score.method} trains on the base model's samples (v0)")
            if not self.version - self.lag <= info.policy_version <= self.version:
                raise RuntimeError(
                    f"the rollout engines sampled with policy v{info.policy_version}, but step {step} (learner at "
                    f"v{self.version}, cluster.max_policy_lag={self.lag}) accepts v{max(0, self.version - self.lag)}-"
                    f"v{self.version}: the weight sync ({self.cfg.cluster.weight_sync}) did not reach the engines"
                )
        waits = {"rollout_s": rolled_out - started, "grading_s": graded - rolled_out}
        return [info for info, _ in taken], [handle for _, handle in taken], waits

    # --- steps ------------------------------------------------------------------------------

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy, one trace per held-out problem, by the current policy: the paper's evaluation
        protocol. Not training data, so it does not pass through the trace buffer."""
        started = time.perf_counter()
        request = self.eval_request()
        shards = self.backend.submit(request)
        infos = [self.backend.collect(shard)[0] for shard in shards]
        meta = [m for info in infos for m in info.meta]
        metrics = trace_metrics(meta)
        # per problem, for the suite's bootstrap over problems (learner/statistics.py)
        # (None: no verdict)
        self.last_eval_problems = [
            {"problem_id": m.problem_id, **{k: None if np.isnan(v) else float(v) for k, v in zip(("r1", "r2"), r)}}
            for m, r in zip(meta, rewards(meta))]
        self.eval_seconds = time.perf_counter() - started
        self.on_record({"kind": "eval", "step": step, "policy_version": self.version, **metrics})
        return metrics

    def train_step(self, objective: Objective, step: int) -> dict:
        started = time.perf_counter()
        infos, batches, waits = self._step_batches(step)
        meta = [m for info in infos for m in info.meta]
        r = rewards(meta)
        groups = np.array([f"{b}:{m.group}" for b, info in enumerate(infos) for m in info.meta])  # one per prompt
        left_out = int((~graded_groups(r, groups)).sum())  # the learner leaves the same groups out
        if left_out == len(meta):
            raise RuntimeError(f"no trace of step {step} got a verdict from the graders (e.g. "
                               f"{meta[0].grade1.detail!r}): nothing to train on")
        self.traces_left_out += left_out
        stats = self.backend.train(objective, r, batches)
        lags = [self.version - info.policy_version for info in infos]
        self.version += 1
        sync_s = self.backend.sync(self.version)
        requested = time.perf_counter()
        self._request_ahead()  # the new version lets the next step's rollouts start (in-process: run)
        self._move_finished()
        waits["rollout_s"] += time.perf_counter() - requested
        rollout_tokens = float(sum(info.rollout_tokens for info in infos))
        engine_s = max(info.rollout_s for info in infos)  # the actors sample side by side
        record = {
            "kind": "train", "stage": objective.stage, "method": objective.method, "step": step,
            "policy_version": self.version, "sampled_policy_version": min(info.policy_version for info in infos),
            "policy_lag_mean": float(np.mean(lags)), "policy_lag_max": max(lags),
            **{f"train_{k}": v for k, v in trace_metrics(meta).items()},  # the five metrics on this step's samples
            "reward_t1": float(np.nanmean(r[:, 0])), "reward_t2": float(np.nanmean(r[:, 1])),
            **stats, "rollout_tokens": rollout_tokens, **waits, "sync_s": sync_s,
            "step_s": time.perf_counter() - started,
            "rollout_tokens_per_s": rollout_tokens / max(engine_s, 1e-9),
            "reference_s": max(info.reference_s for info in infos),  # on the rollout actors (cluster.reference_on)
            "learner_tokens_per_s": stats["learner_tokens"] / max(stats["learner_s"], 1e-9),
            "buffer_depth": len(self.buffer), "batches_trained": len(batches), "traces_trained": len(meta) - left_out,
            "traces_left_out": left_out, "traces_left_out_total": self.traces_left_out,
            "batches_stale_total": self.buffer.dropped_stale, "batches_requested_total": self.batches_requested,
        }
        self.on_record(record)
        return record

    # --- checkpoint state -------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What a resumed loop needs to take the same steps (JSON-able). Rollouts in flight are
        represented by their requests, which a resumed run makes again."""
        return {
            "version": self.version,
            "rng": self.rng.bit_generator.state,
            "requests": [{"step": e.step, "problems": [p.model_dump() for p in e.request.problems], "k": e.request.k,
                          "params": asdict(e.request.params), "min_version": e.request.min_version}
                         for e in self.in_flight],
            # the in-flight requests are counted again when the resumed loop makes them
            "batches_requested": self.batches_requested - sum(len(e.shards) for e in self.in_flight),
            "batches_stale_total": self.buffer.dropped_stale,
            "traces_left_out": self.traces_left_out,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue after step state["version"]: the backend's learner must hold that step's weights
        already; the engines are sent them here."""
        if self.offline and state["version"] > 0:
            raise ValueError(f"score.method={self.cfg.score.method} trains on samples of the base model, drawn before "
                             "its first update and not checkpointed: such a run cannot resume or recover after "
                             "step 0; start it again")
        self.version = self.requested_steps = state["version"]
        self.rng.bit_generator.state = state["rng"]
        self.replay = deque((r["step"], Request([Problem(**p) for p in r["problems"]], r["k"],
                                                SamplingParams(**r["params"]), r["min_version"]))
                            for r in state["requests"])
        self.batches_requested, self.buffer.dropped_stale = state["batches_requested"], state["batches_stale_total"]
        self.traces_left_out = state["traces_left_out"]
        self.backend.sync(self.version)

    # --- the schedule -----------------------------------------------------------------------

    def _sample_offline_data(self) -> None:
        """Every step's rollouts by the base model (version 0), graded, into the buffer, before the
        first update changes the weights: the offline baselines' data set."""
        started = time.perf_counter()
        self._request_ahead()
        for entry in self.in_flight:
            self.backend.wait_rollouts(entry.shards)
        self._move_finished()
        self.log(f"sampled the {self.cfg.score.method} data set with the base model: {self.total_steps} steps' "
                 f"rollouts in {time.perf_counter() - started:.1f}s")

    def remaining_s(self, step: int) -> float:
        """Seconds left after `step`: the steps left at this run's median step time (the median: the
        first step, which fills the pipeline, is slower than the rest), and the evaluations left (the
        periodic ones and the final one) at the last evaluation's time."""
        every = self.cfg.eval.every_steps
        evals_left = 1 + sum(1 for s in range(step + 1, self.total_steps) if every and s % every == 0)
        return (self.total_steps - step) * statistics.median(self.step_seconds) + evals_left * (self.eval_seconds or 0.0)

    def train(self) -> None:
        """The schedule's steps after those already done (all of them for a new run). Stops early,
        with a checkpoint, at the first step boundary after `stop_requested` is set."""
        if self.offline and self.version == 0:
            self._sample_offline_data()
        step = 0
        for objective, steps in self.schedule:
            label = f"stage {objective.stage}" if objective.method == "score" else objective.method
            for i in range(steps):
                step += 1
                if step <= self.version:  # done before the checkpoint this run resumed from
                    continue
                r = self.train_step(objective, step)
                self.step_seconds.append(r["step_s"])
                self.log(
                    f"{label} step {i + 1}/{steps} ({step}/{self.total_steps}) | reward@t1 {r['reward_t1']:.3f} "
                    f"@t2 {r['reward_t2']:.3f} | KL t1 {r['kl_t1']:.4f} t2 {r['kl_t2']:.4f} | "
                    f"{r['rollout_tokens_per_s']:.0f} rollout tok/s | lag {r['policy_lag_max']} | {r['step_s']:.1f}s "
                    f"(waited: rollout {r['rollout_s']:.1f} grade {r['grading_s']:.1f}; learn {r['learner_s']:.1f} "
                    f"sync {r['sync_s']:.1f}) | eta {duration(self.remaining_s(step))}"
                )
                if self.cfg.eval.every_steps and step % self.cfg.eval.every_steps == 0 and step < self.total_steps:
                    m = self.evaluate(step)
                    self.log(f"eval @ step {step}: Acc@t1 {m['acc_t1']:.1f} Acc@t2 {m['acc_t2']:.1f} Δ {m['delta']:+.1f}")
                every = self.cfg.checkpoint.every_steps
                if self.on_checkpoint and (step == self.total_steps or self.stop_requested or (every and step % every == 0)):
                    self.on_checkpoint(step)
                if self.stop_requested and step < self.total_steps:
                    raise Stopped(self.stop_requested, step)


def duration(seconds: float) -> str:
    """3m12s, 45s: how long, for a log line."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Stopped(Exception):
    """The loop stopped early on request (SIGTERM, SIGINT), after checkpointing its last step."""

    def __init__(self, why: str, step: int):
        super().__init__(f"stopped by {why} after step {step}")
        self.why, self.step = why, step


def problems_of(info: BatchInfo, problems: list[Problem]) -> list[Problem]:
    """The problems a batch sampled, one per prompt group, in group order."""
    by_id = {p.id: p for p in problems}
    first_of_group = {m.group: m.problem_id for m in reversed(info.meta)}
    return [by_id[first_of_group[g]] for g in sorted(first_of_group)]
