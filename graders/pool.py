"""Grader actors: a GraderWorker holds a task and grades batches; a GraderPool spreads a batch over G
of them as Ray actors and always answers, one Grade per completion, whatever the actors do.

A dead actor is restarted by Ray (max_restarts); a stuck one is killed at the batch deadline and
replaced by a new one. Either way that batch's items get reward 0 with a status and a detail that names the
actor, and the caller goes on.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import ray

from graders.registry import make_task
from learner import telemetry
from protos import Grade, Problem


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

    def ready(self) -> bool:
        return True

    def _grade(self, problem: Problem, completion: str) -> Grade:
        try:
            with telemetry.grade_timer():
                return self.task.grade(problem, completion)
        except Exception as exc:  # a grader bug must cost one grade, not the batch
            return Grade(reward=0.0, status="error", detail=f"grader raised {type(exc).__name__}: {exc}")


GraderActor = ray.remote(GraderWorker)


class GraderPool:
    def __init__(self, task_name: str, params: dict | None = None, num_actors: int = 2, threads_per_actor: int = 1,
                 batch_timeout_s: float = 300.0, num_cpus_per_actor: float = 1.0, resources: dict | None = None):
        if num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {num_actors}")
        self.batch_timeout_s = batch_timeout_s
        options = {"max_restarts": -1, "max_task_retries": 0, "num_cpus": num_cpus_per_actor, "resources": resources or {}}
        self._new_actor = lambda: GraderActor.options(**options).remote(task_name, params, threads_per_actor)
        self.actors = [self._new_actor() for _ in range(num_actors)]
        self._await_ready(range(num_actors))

    def grade(self, problems: list[Problem], completions: list[str]) -> list[Grade]:
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        if not problems:
            return []
        spans = _spans(len(problems), len(self.actors))
        calls = [
            (i, b - a, actor.grade_batch.remote(problems[a:b], completions[a:b]))
            for i, (actor, (a, b)) in enumerate(zip(self.actors, spans)) if b > a
        ]
        refs = [ref for _, _, ref in calls]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.batch_timeout_s)
        finished = set(ready)
        grades: list[Grade] = []
        for i, n, ref in calls:
            grades += self._collect(i, n, ref) if ref in finished else self._give_up(i, n)
        telemetry.count_grades([g.status for g in grades])  # here, so timeouts and dead actors count too
        return grades

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

    def _collect(self, i: int, n: int, ref: ray.ObjectRef) -> list[Grade]:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            first_line = str(exc).strip().split("\n", 1)[0][:300]
            self._await_ready([i])  # Ray is restarting it: the next batch must find it alive
            return _same(n, "error", f"grader actor {i} failed: {type(exc).__name__}: {first_line}")

    def _give_up(self, i: int, n: int) -> list[Grade]:
        # A stuck grader is replaced, not waited on. A new actor rather than a restart: a call sent
        # to a killed actor before Ray notices its death would fail too.
        self._replace(i)
        self._await_ready([i])
        return _same(n, "timeout", f"grader actor {i} gave no grades within {self.batch_timeout_s:g}s; replaced")

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
