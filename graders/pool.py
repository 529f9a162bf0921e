"""Grader actors: a GraderWorker holds a task and grades; a GraderPool spreads work over G of them
as Ray actors and always answers, one Grade per completion, whatever the actors do.

The pool lives in the driver and holds the only handles to its actors, so an actor it replaces is
replaced for every later call. A dead actor is restarted by Ray (max_restarts); a stuck one is
killed at the batch deadline and replaced by a new one. Either way the span it held is graded
again on another actor; only when the retries run out do its items get status "error" (no
verdict, which training leaves out), with a detail that names the actor. A grade that was never
given is never a zero reward.

Two ways in: `grade(problems, completions)` (blocking), and `grade_traces(problems, info_ref, n)`
then `collect(pending)`, which grades both attempts of a rollout batch that may not exist yet: the
calls take the rollout's ObjectRef, so Ray starts grading the moment the rollout finishes, without
a round trip through the driver.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import ray

from common import telemetry
from common.logs import describe
from graders.registry import make_task
from protos import BatchInfo, Grade, Problem


class GraderWorker:
    def __init__(self, task_name: str, params: dict | None = None, threads: int = 1):
        self.task = make_task(task_name, params)
        self.threads = threads

    def grade_batch(self, problems: list[Problem], completions: list[str]) -> list[Grade]:
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        if self.threads == 1:
            return [self._grade(p, c) for p, c in zip(problems, completions)]
        # Threads suffice: the work happens in sandbox and math-verify processes, not under the GIL.
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(self._grade, problems, completions))

    def grade_traces(self, problems: list[Problem], info: BatchInfo, start: int = 0, stop: int | None = None) -> list[tuple[Grade, Grade]]:
        """(grade of attempt 1, grade of attempt 2) for the traces start..stop of a rollout batch."""
        by_id = {p.id: p for p in problems}
        meta = info.meta[start:stop]
        targets = [by_id[m.problem_id] for m in meta]
        grades = self.grade_batch(targets + targets, [m.attempt1 for m in meta] + [m.attempt2 for m in meta])
        return list(zip(grades[: len(meta)], grades[len(meta) :]))

    def ready(self) -> bool:
        return True

    def _grade(self, problem: Problem, completion: str) -> Grade:
        try:
            with telemetry.grade_timer():
                return self.task.grade(problem, completion)
        except Exception as exc:  # a grader bug must cost one grade, not the batch
            return Grade(reward=0.0, status="error", detail=f"grader raised {type(exc).__name__}: {exc}")


GraderActor = ray.remote(GraderWorker)  # thin Ray wrapper: no Ray-specific logic


@dataclass
class Span:
    """Items a..b, sent to actor `index` (the handle it had then) as `ref`."""

    index: int
    a: int
    b: int
    actor: Any
    ref: Any


@dataclass
class PendingGrades:
    """Grading in flight: one call per actor span, how to make it, and how to stand in for a span that fails."""

    spans: list[Span]
    call: Callable[[Any, int, int], Any]  # (actor, a, b) -> ObjectRef of the span's items
    failed: Callable[[int, str, str], list]  # (items, status, detail) -> stand-in items
    waits_for: Any = None  # an ObjectRef the calls depend on (the rollout): the deadline starts once it is ready

    @property
    def refs(self) -> list:
        return [span.ref for span in self.spans]


class GraderPool:
    def __init__(self, task_name: str, params: dict | None = None, num_actors: int = 2, threads_per_actor: int = 1,
                 batch_timeout_s: float = 300.0, num_cpus_per_actor: float = 1.0, resources: dict | None = None,
                 retries: int = 2):
        if num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {num_actors}")
        self.batch_timeout_s, self.retries = batch_timeout_s, retries
        self.regraded = 0  # spans graded again after their actor died or hung
        options = {"max_restarts": -1, "max_task_retries": 0, "num_cpus": num_cpus_per_actor, "resources": resources or {}}
        self._new_actor = lambda: GraderActor.options(**options).remote(task_name, params, threads_per_actor)
        self.actors = [self._new_actor() for _ in range(num_actors)]
        self._await_ready(range(num_actors))

    def grade(self, problems: list[Problem], completions: list[str]) -> list[Grade]:
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        pending = self._spread(
            len(problems), lambda actor, a, b: actor.grade_batch.remote(problems[a:b], completions[a:b]), _same
        )
        return self.collect(pending)

    def grade_traces(self, problems: list[Problem], info_ref, num_traces: int) -> PendingGrades:
        """Start grading both attempts of the `num_traces` traces the rollout `info_ref` will hold."""
        return self._spread(
            num_traces, lambda actor, a, b: actor.grade_traces.remote(problems, info_ref, a, b),
            lambda n, status, detail: [(g, g) for g in _same(n, status, detail)], waits_for=info_ref,
        )

    def collect(self, pending: PendingGrades) -> list:
        """The items of every span in order. A span whose actor died or missed the deadline is
        graded again on another actor (the failed one is restarted or replaced), up to `retries`
        times; after that its items are stand-ins with status "error": no verdict, which training
        leaves out rather than reading as wrong answers."""
        if pending.waits_for is not None:  # the rollout's own time is not grading time (the caller
            ray.wait([pending.waits_for], fetch_local=False)  # fetches it first: a failed rollout raises there)
        for span in pending.spans:  # sent to an actor replaced since (a stuck one, for an earlier batch): resend
            if span.actor is not self.actors[span.index]:
                self._send(pending, span, span.index)
        results: dict[int, list] = {}
        for attempt in range(self.retries + 1):
            outstanding = [s for s in pending.spans if id(s) not in results]
            failures = self._gather(outstanding, results)
            if not failures:
                break
            for span, reason in failures:
                if attempt == self.retries:
                    results[id(span)] = pending.failed(span.b - span.a, "error", f"ungraded: {reason}; "
                                                       f"{self.retries} retries on other actors failed too")
                else:  # another actor, so a grader that fails on this input (a crash it causes) is not asked twice in a row
                    self.regraded += 1
                    self._send(pending, span, (span.index + 1) % len(self.actors))
        items = [item for span in pending.spans for item in results[id(span)]]
        grades = [g for item in items for g in (item if isinstance(item, tuple) else (item,))]
        telemetry.count_grades([g.status for g in grades])  # here, so timeouts and dead actors count too
        return items

    def _send(self, pending: PendingGrades, span: Span, index: int) -> None:
        span.index, span.actor = index, self.actors[index]
        span.ref = pending.call(span.actor, span.a, span.b)

    def _gather(self, spans: list[Span], results: dict[int, list]) -> list[tuple[Span, str]]:
        """Wait (up to the batch deadline) for `spans`; put what came back into `results` and return
        the spans that failed with why. A dead actor is restarted by Ray and a stuck one replaced,
        each waited for before this returns, so a retry finds every actor alive."""
        refs = [span.ref for span in spans]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.batch_timeout_s, fetch_local=False)
        finished, failures, replaced = set(ready), [], set()
        for span in spans:
            if span.ref not in finished:
                # A stuck grader is replaced, not waited on. A new actor rather than a restart: a call
                # sent to a killed actor before Ray notices its death would fail too.
                if span.index not in replaced:
                    self._replace(span.index)
                    replaced.add(span.index)
                failures.append((span, f"grader actor {span.index} gave no grades within {self.batch_timeout_s:g}s "
                                       "(replaced)"))
                continue
            try:
                results[id(span)] = ray.get(span.ref)
            except ray.exceptions.RayError as exc:
                failures.append((span, f"grader actor {span.index} failed: {describe(exc)}"))
        self._await_ready(sorted({span.index for span, _ in failures}))
        return failures

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

    def _spread(self, n: int, call: Callable, failed: Callable, waits_for: Any = None) -> PendingGrades:
        spans = [
            Span(i, a, b, actor, call(actor, a, b))
            for i, (actor, (a, b)) in enumerate(zip(self.actors, _spans(n, len(self.actors)))) if b > a
        ]
        return PendingGrades(spans, call, failed, waits_for)

    def _replace(self, i: int) -> None:
        ray.kill(self.actors[i], no_restart=True)
        self.actors[i] = self._new_actor()

    def _await_ready(self, indices, attempts: int = 2) -> None:
        """Block until these actors answer, so a batch deadline measures grading, not start-up.

        An actor that does not come up in time is replaced once; if that fails too, the pool
        cannot grade at all, which is an error for the caller rather than a stream of zero rewards.
        """
        timeout = max(60.0, self.batch_timeout_s)
        pending = list(indices)
        for _ in range(attempts):
            refs = {i: self.actors[i].ready.remote() for i in pending}
            ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
            alive = set()
            for i, ref in refs.items():
                if ref in ready:
                    try:
                        ray.get(ref)
                        alive.add(i)
                    except ray.exceptions.RayError:
                        pass
            pending = [i for i in pending if i not in alive]
            if not pending:
                return
            for i in pending:
                self._replace(i)
        raise RuntimeError(f"grader actors {pending} did not start within {timeout:g}s (twice); check the Ray logs")


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = [n * k // parts for k in range(parts + 1)]
    return list(zip(bounds, bounds[1:]))


def _same(n: int, status: str, detail: str) -> list[Grade]:
    return [Grade(reward=0.0, status=status, detail=detail) for _ in range(n)]
