"""GraderWorker in one process, and GraderPool on a real local Ray: dead and stuck actors."""
import threading
import time

import pytest
import ray

from graders.pool import GraderPool, GraderWorker
from protos import Problem

ADD_RIGHT = "    return x + y\n"
ADD_LOOPS = "    import time\n    time.sleep(600)\n"


def math_problem(answer: str) -> Problem:
    return Problem(id=f"m-{answer}", prompt="", answer=answer)


def test_worker_grades_a_batch_in_order():
    worker = GraderWorker("math", {"timeout_s": 3})
    problems = [math_problem("2"), math_problem("3"), math_problem(r"\frac{1}{2}")]
    grades = worker.grade_batch(problems, [r"\boxed{2}", r"\boxed{4}", r"\boxed{0.5}"])
    assert [g.status for g in grades] == ["pass", "fail", "pass"]
    worker.task.judge.close()


def test_worker_turns_a_grader_exception_into_an_error_grade():
    worker = GraderWorker("math", {"timeout_s": 3}, threads=2)
    grades = worker.grade_batch([math_problem("2")] * 2, [None, r"\boxed{2}"])  # None: not even a string
    assert grades[0].status == "error" and "TypeError" in grades[0].detail
    assert grades[1].status == "pass"
    with pytest.raises(ValueError, match="2 problems but 1 completions"):
        worker.grade_batch([math_problem("2")] * 2, ["x"])
    worker.task.judge.close()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def add_problem():
    return GraderWorker("humaneval").task.problem("HumanEval/53")


def test_pool_splits_a_batch_across_actors_and_keeps_order(local_ray):
    # a generous per-answer timeout: this test is about order, and a loaded machine is slow to check
    pool = GraderPool("math", {"timeout_s": 30}, num_actors=2, num_cpus_per_actor=0.5)
    answers = [str(i) for i in range(7)]
    completions = [rf"\boxed{{{a if i % 2 == 0 else 'wrong'}}}" for i, a in enumerate(answers)]
    grades = pool.grade([math_problem(a) for a in answers], completions)
    assert [g.status for g in grades] == ["pass", "fail"] * 3 + ["pass"]
    assert pool.grade([], []) == []
    pool.shutdown()


def test_stuck_actor_yields_timeouts_and_is_replaced(local_ray, add_problem):
    pool = GraderPool("humaneval", {"timeout_s": 600}, num_actors=2, batch_timeout_s=4, num_cpus_per_actor=0.5)
    start = time.monotonic()
    grades = pool.grade([add_problem] * 2, [ADD_LOOPS, ADD_RIGHT])  # actor 0 gets the stuck one
    assert time.monotonic() - start < 60  # the 4 s batch deadline, not the 600 s sleep (slack for a loaded machine)
    assert grades[0].status == "timeout" and "grader actor 0" in grades[0].detail and grades[0].reward == 0.0
    assert grades[1].status == "pass"
    assert [g.status for g in pool.grade([add_problem] * 2, [ADD_RIGHT] * 2)] == ["pass", "pass"]
    pool.shutdown()


def test_dead_actor_yields_errors_and_is_restarted(local_ray, add_problem):
    pool = GraderPool("humaneval", {"timeout_s": 600}, num_actors=2, batch_timeout_s=60, num_cpus_per_actor=0.5)
    pool.grade([add_problem] * 2, [ADD_RIGHT] * 2)  # both actors up
    killer = threading.Timer(2.0, lambda: ray.kill(pool.actors[0], no_restart=False))
    killer.start()
    grades = pool.grade([add_problem] * 4, [ADD_LOOPS, ADD_LOOPS, ADD_RIGHT, ADD_RIGHT])
    killer.join()
    assert [g.status for g in grades] == ["error", "error", "pass", "pass"]
    assert "grader actor 0 failed" in grades[0].detail
    assert [g.status for g in pool.grade([add_problem] * 2, [ADD_RIGHT] * 2)] == ["pass", "pass"]
    pool.shutdown()
