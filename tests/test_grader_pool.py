"""GraderWorker in one process, and GraderPool on a real local Ray: dead and stuck actors."""
import os
import signal
import threading
import time

import pytest
import ray

from graders.pool import GraderPool, GraderWorker
from protos import BatchInfo, Problem, TraceMeta

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


def actor_pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def test_a_stopped_actor_is_replaced_and_its_grades_given_by_another(local_ray, add_problem):
    """SIGSTOP (a hung process): its span is graded again elsewhere, never scored as a failure."""
    pool = GraderPool("humaneval", {"timeout_s": 600}, num_actors=2, batch_timeout_s=4, num_cpus_per_actor=0.5)
    stopped, fine = pool.actors
    os.kill(actor_pid(stopped), signal.SIGSTOP)
    start = time.monotonic()
    grades = pool.grade([add_problem] * 4, [ADD_RIGHT] * 4)
    assert time.monotonic() - start < 60  # one 4 s deadline and a re-grade (slack for a loaded machine)
    assert [g.status for g in grades] == ["pass"] * 4 and all(g.reward == 1.0 for g in grades)
    assert pool.regraded == 1
    assert pool.actors[0] is not stopped and pool.actors[1] is fine  # the pool the caller holds has the new one
    assert [g.status for g in pool.grade([add_problem] * 2, [ADD_RIGHT] * 2)] == ["pass", "pass"]
    pool.shutdown()


def test_an_answer_that_hangs_every_grader_ends_ungraded_not_wrong(local_ray, add_problem):
    pool = GraderPool("humaneval", {"timeout_s": 600}, num_actors=2, batch_timeout_s=3, num_cpus_per_actor=0.5,
                      retries=1)
    start = time.monotonic()
    grades = pool.grade([add_problem] * 2, [ADD_LOOPS, ADD_RIGHT])  # actor 0 hangs, then actor 1 on the retry
    assert time.monotonic() - start < 60
    assert grades[0].status == "error" and not grades[0].given and "ungraded" in grades[0].detail
    assert "grader actor 1 gave no grades" in grades[0].detail  # the retry's actor
    assert grades[1].status == "pass"
    assert [g.status for g in pool.grade([add_problem] * 2, [ADD_RIGHT] * 2)] == ["pass", "pass"]  # both replaced
    pool.shutdown()


def test_a_replaced_grader_takes_over_what_was_queued_on_the_stuck_one(local_ray, add_problem):
    """In the pipeline, later batches' grading is queued on an actor before it gets stuck."""
    pool = GraderPool("humaneval", {"timeout_s": 600}, num_actors=1, batch_timeout_s=4, num_cpus_per_actor=0.5,
                      retries=0)
    stuck = pool.actors[0]

    def trace(attempt1: str, attempt2: str) -> BatchInfo:
        meta = [TraceMeta(problem_id=add_problem.id, group=0, attempt1=attempt1, attempt2=attempt2)]
        return BatchInfo(policy_version=0, meta=meta, rollout_s=0.0, rollout_tokens=0)

    first = pool.grade_traces([add_problem], ray.put(trace(ADD_LOOPS, ADD_RIGHT)), 1)
    queued = pool.grade_traces([add_problem], ray.put(trace(ADD_RIGHT, ADD_RIGHT)), 1)  # behind the stuck one
    ((g1, g2),) = pool.collect(first)
    assert g1.status == "error" and g2.status == "error" and pool.actors[0] is not stuck
    ((g1, g2),) = pool.collect(queued)  # sent again, to the replacement
    assert (g1.status, g2.status) == ("pass", "pass")
    pool.shutdown()


def test_a_dead_actor_is_restarted_and_its_grades_given_by_another(local_ray, add_problem):
    pool = GraderPool("humaneval", {"timeout_s": 600}, num_actors=2, batch_timeout_s=60, num_cpus_per_actor=0.5)
    pool.grade([add_problem] * 2, [ADD_RIGHT] * 2)  # both actors up
    pid = actor_pid(pool.actors[0])
    killer = threading.Timer(1.5, lambda: os.kill(pid, signal.SIGKILL))  # mid-grade, by PID, as a crash would
    killer.start()
    slow_right = ADD_RIGHT + "\nimport time\ntime.sleep(3)\n"  # right, after 3 s (once: the tests call add often)
    grades = pool.grade([add_problem] * 4, [slow_right] * 4)
    killer.join()
    assert [g.status for g in grades] == ["pass"] * 4
    assert pool.regraded == 1
    assert actor_pid(pool.actors[0]) != pid  # Ray restarted it
    assert [g.status for g in pool.grade([add_problem] * 2, [ADD_RIGHT] * 2)] == ["pass", "pass"]
    pool.shutdown()
