"""Two-attempt rollouts: k first attempts per problem, then one second attempt for each.

`RolloutWorker` is the logic (testable in-process with any engine); `RolloutActor` is its thin Ray
wrapper, which builds the engine where the actor runs and takes part in weight transport.

New weights are staged, not loaded: they may arrive at any time (on the actor's own "weights"
thread, so a broadcast never waits for a rollout to finish), and the engine takes the newest
staged version between requests, at the start of the next rollout. A request may name the oldest
version it accepts (`min_version`): the rollout waits for weights at least that new, which is how
the driver bounds the policy lag of what it will train on.

With a `ReferencePolicy` (cluster.reference_on=rollout, the default), a training batch leaves the
actor already scored by the frozen reference model (actors/reference.py), so the learner's update
is the policy's forward and backward only.
"""
from __future__ import annotations

import os
import threading
import time

import ray

from actors.engines.base import GenerationEngine, SamplingParams
from actors.reference import ReferencePolicy
from actors.turns import Turns
from actors.weight_sync import WeightReceiver
from common import telemetry
from common.logs import configure_process
from graders.base import Task
from protos import BatchInfo, Problem, TraceBatch, TraceMeta


class RolloutWorker:
    """One engine, one policy version per batch."""

    def __init__(self, engine: GenerationEngine, task: Task, weights_timeout_s: float = 300.0,
                 reference: ReferencePolicy | None = None):
        self.engine = engine
        self.reference = reference
        self.turns = Turns(engine.tokenizer, task)
        self.pad_id = engine.tokenizer.pad_token_id
        self.weights_timeout_s = weights_timeout_s
        self._staged: tuple[int, dict] | None = None
        self._weights_arrived = threading.Condition()

    def load_weights(self, version: int, state_dict: dict) -> None:
        """Stage new weights; the engine takes them before its next rollout."""
        with self._weights_arrived:
            if self._staged is None or version > self._staged[0]:
                self._staged = (version, state_dict)
            self._weights_arrived.notify_all()

    def _take_weights(self, min_version: int) -> None:
        """Load the newest staged weights, first waiting for some of at least `min_version`."""
        with self._weights_arrived:
            newest = lambda: max(self.engine.version, self._staged[0] if self._staged else -1)  # noqa: E731
            if not self._weights_arrived.wait_for(lambda: newest() >= min_version, self.weights_timeout_s):
                raise TimeoutError(
                    f"a rollout needs policy v{min_version} or newer, but the engine holds v{self.engine.version} "
                    f"and no newer weights arrived within {self.weights_timeout_s:g}s"
                )
            staged, self._staged = self._staged, None
        if staged is not None and staged[0] > self.engine.version:
            self.engine.update_weights(*staged)

    def rollout(self, problems: list[Problem], k: int, params: SamplingParams, min_version: int = 0,
                for_training: bool = True) -> tuple[BatchInfo, TraceBatch]:
        """k traces per problem: what the driver reads, and the arrays the learner trains on (scored
        by the reference policy, if this worker holds it and the batch is `for_training`)."""
        self._take_weights(min_version)
        version = self.engine.version  # weights change only between rollouts, so the batch has one version
        started = time.perf_counter()
        prompts = [self.turns.first(p) for p in problems for _ in range(k)]
        first = self.engine.generate(prompts, params)
        second_prompts = [self.turns.second(x, g.token_ids) for x, g in zip(prompts, first)]
        second = self.engine.generate(second_prompts, params)
        if self.engine.version != version:
            raise RuntimeError(f"policy changed from v{version} to v{self.engine.version} during a rollout")
        groups = [i // k for i in range(len(prompts))]
        meta = [
            TraceMeta(
                problem_id=problems[group].id,
                group=group,
                attempt1=self.turns.text(g1.token_ids),
                attempt2=self.turns.text(g2.token_ids),
                finish1=g1.finish_reason,
                finish2=g2.finish_reason,
            )
            for group, g1, g2 in zip(groups, first, second)
        ]
        batch = TraceBatch.from_parts(
            groups,
            prompts,
            [g.token_ids for g in first],
            self.turns.instruction_ids,
            [g.token_ids for g in second],
            [g.logprobs for g in first],
            [g.logprobs for g in second],
            self.pad_id,
        )
        info = BatchInfo(version, meta, time.perf_counter() - started, sum(len(g.token_ids) for g in first + second))
        telemetry.record_rollout(info.rollout_tokens, info.rollout_s)
        if self.reference is not None and for_training:
            scoring = time.perf_counter()
            batch.ref_logprobs = self.reference.logprobs(batch)
            info.reference_s = time.perf_counter() - scoring
        return info, batch


@ray.remote(concurrency_groups={"weights": 1, "health": 1})
class RolloutActor(RolloutWorker, WeightReceiver):
    """Thin Ray wrapper: builds its engine in the actor's process. Rollouts run one at a time in
    the default group; weight transport (actors/weight_sync.py) calls into the "weights" group, so
    it proceeds while a rollout runs; `alive` answers on a thread of its own, whatever the other two
    are doing. Call `rollout` with `.options(num_returns=2)`, so the driver can fetch the BatchInfo
    alone."""

    def __init__(self, engine_kind: str, model_dir: str, task_name: str, task_params: dict, threads: int,
                 weights_timeout_s: float, reference: dict | None = None):
        """`reference`: ReferencePolicy's keyword arguments (temperature, micro_batch_tokens) to score
        training batches with the base model in `model_dir`; None = the learner scores them."""
        from actors.engines import make_engine
        from graders.registry import make_task

        configure_process(threads)
        self.threads = threads
        super().__init__(
            make_engine(engine_kind, model_dir), make_task(task_name, task_params), weights_timeout_s,
            ReferencePolicy(model_dir, **reference) if reference is not None else None,
        )

    @ray.method(concurrency_group="health")
    def alive(self) -> bool:
        return True

    @ray.method(concurrency_group="health")
    def process(self) -> tuple[str, int]:
        """Its node's id and its pid: what the driver needs to end this process if it hangs."""
        return ray.get_runtime_context().get_node_id(), os.getpid()

    def rollout(self, *args, **kwargs):
        # An actor with concurrency groups runs each group on a thread of its own, and a thread's
        # OpenMP thread count is its own: set it where the engine runs (vLLM's CPU attention
        # checks that it computes with as many threads as it planned for).
        configure_process(self.threads)
        return super().rollout(*args, **kwargs)
