"""The HumanEval task: every canonical solution passes, a wrong answer fails, hostile code is graded."""
import numpy as np
import pytest

from graders.humaneval_task import HumanEvalTask, program_text
from graders.pool import GraderWorker
from graders.registry import make_task
from graders.sandbox import bwrap_works
from protos import Problem

# Wraps the canonical solution so that every answer it gives is wrong, keeping its type.
WRONG_ANSWER = '''

def _wrong(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [0])
    return 0 if value is None else None


_canonical = {name}


def {name}(*args, **kwargs):
    return _wrong(_canonical(*args, **kwargs))
'''
# The canonical solution, then raising instead of answering.
RAISES = '''

def {name}(*args, **kwargs):
    raise ValueError("no answer")
'''
ISOLATIONS = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not bwrap_works(), reason="bwrap missing or unusable here")),
    "fallback",
]


@pytest.fixture(scope="module")
def task():
    return HumanEvalTask()


def test_all_canonical_solutions_pass_and_wrong_answers_fail(task):
    problems = [task.problem(f"HumanEval/{i}") for i in range(164)]
    canonical = [p.answer for p in problems]
    wrong = [p.answer + WRONG_ANSWER.format(name=p.meta["entry_point"]) for p in problems]
    raises = [p.answer + RAISES.format(name=p.meta["entry_point"]) for p in problems]
    worker = GraderWorker("humaneval", threads=4)
    grades = worker.grade_batch(problems * 3, canonical + wrong + raises)
    passed = {p.id: g for p, g in zip(problems, grades[:164]) if g.status != "pass"}
    failed = {p.id: g for p, g in zip(problems, grades[164:328]) if g.status != "fail"}
    raised = {p.id: g for p, g in zip(problems, grades[328:]) if (g.status, g.detail) != ("fail", "ValueError: no answer")}
    assert passed == {} and failed == {} and raised == {}
    assert all(g.reward == 1.0 for g in grades[:164]) and all(g.reward == 0.0 for g in grades[164:])


def test_a_check_past_the_script_of_an_ended_program_runs_it_again_live(task):
    # A program that answered every recorded call is ended before check() runs; a check() that then
    # makes a call off the script gets its verdict from a second run, every call live, never from
    # the answers of two runs.
    add = task.problem("HumanEval/53")
    assert task.grade(add, "    return x + y\n").status == "pass"  # the script recorded
    script = task._recorded[add.id]
    try:
        task._recorded[add.id] = script[:1]  # check() goes past it at its second call
        assert task.grade(add, "    return x + y\n").status == "pass"
        right_once = "    add.calls = getattr(add, 'calls', 0) + 1\n    return x + y if add.calls == 1 else 0\n"
        grade = task.grade(add, right_once)
        assert (grade.status, grade.reward) == ("fail", 0.0) and "a test failed" in grade.detail, grade
    finally:
        task._recorded[add.id] = script


def test_completion_is_a_continuation_or_a_fenced_program():
    prompt = "def f(x):\n    \"\"\"Double x.\"\"\"\n"
    assert program_text(prompt, "    return 2 * x\n") == prompt + "    return 2 * x\n"
    fenced = "Fixed:\n```python\ndef f(x):\n    return 2 * x\n```\nDone."
    assert program_text(prompt, fenced) == prompt + "\ndef f(x):\n    return 2 * x\n"
    two_fences = "```python\nwrong\n```\nthen\n```py\nright\n```"
    assert program_text(prompt, two_fences).endswith("\nright\n")
    cut_off = "```python\ndef f(x):\n    return 2 * x\n"
    assert program_text(prompt, cut_off).endswith("return 2 * x\n")


def test_a_fenced_full_program_is_graded(task):
    add = task.problem("HumanEval/53")
    assert task.grade(add, "Here it is:\n```python\ndef add(x, y):\n    return x + y\n```").status == "pass"


# (completion of HumanEval/53 `add(x, y)`, expected status, text expected in the detail)
HOSTILE = {
    # spinning, it reaches its CPU limit and the wall-clock deadline (both 2 s) within a millisecond:
    # which one the kernel or the grader sees first is chance (CI saw both); either is a timeout
    "infinite loop": ("    while True:\n        pass\n", "timeout", ("wall-clock", "CPU limit")),
    "sleep": ("    import time\n    time.sleep(60)\n", "timeout", "wall-clock"),
    "fork bomb": ("    import os\n    while True:\n        os.fork()\n", "sandbox_violation", "os.fork"),
    "subprocess": ("    import subprocess\n    subprocess.run(['ls', '/'])\n    return x + y\n", "sandbox_violation", "subprocess.Popen"),
    "memory bomb": ("    a = []\n    while True:\n        a.append(bytearray(10 ** 7))\n", "sandbox_violation", "MemoryError"),
    "write outside": ("    open('/tmp/escaped', 'w').write('x')\n    return x + y\n", "sandbox_violation", "open"),
    "read /etc/shadow": ("    print(open('/etc/shadow').read())\n    return x + y\n", "fail", "Error"),
    "socket": ("    import socket\n    socket.socket().connect(('127.0.0.1', 9))\n    return x + y\n", "sandbox_violation", "socket"),
    "kill parent": ("    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return x + y\n", "sandbox_violation", "os.kill"),
    "native code": ("    import ctypes\n    ctypes.CDLL(None)\n    return x + y\n", "sandbox_violation", "ctypes"),
    "os._exit(0) mid-tests": ("    import os\n    os._exit(0)\n", "fail", "before its tests finished"),
    "sys.exit(0) mid-tests": ("    import sys\n    sys.exit(0)\n", "fail", "before its tests finished"),
    "megabytes then right": ("    return x + y\n\nprint('x' * 5_000_000)\n", "pass", ""),
    "syntax error": ("    return x +\n", "fail", "SyntaxError"),
    "huge file": ("    open('big', 'w').write('x' * (64 << 20))\n    return x + y\n", "sandbox_violation", "File too large"),
}


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_completion_is_contained_and_graded(case, isolation):
    # 256 MiB, not the default 1 GiB: zero-filling 1 GiB took 0.9 s on a quiet 2-core machine and
    # over the 2 s deadline on a loaded one, so the memory bomb was graded a timeout instead.
    task = HumanEvalTask(timeout_s=2, isolation=isolation, memory_mb=256)
    add = task.problem("HumanEval/53")
    completion, status, detail = HOSTILE[case]
    grade = task.grade(add, completion)
    assert (grade.status, grade.reward) == (status, 1.0 if status == "pass" else 0.0)
    assert any(d in grade.detail for d in ((detail,) if isinstance(detail, str) else detail)), grade.detail
    assert ("fallback sandbox" in grade.detail) == (isolation == "fallback")
    assert task.grade(add, "    return x + y\n").status == "pass"  # the next grade still works


def test_unknown_problem_is_an_error_grade_not_an_exception(task):
    grade = task.grade(Problem(id="HumanEval/9999", prompt="", answer=""), "pass")
    assert grade.status == "error" and "9999" in grade.detail


def test_split_is_deterministic_disjoint_and_covers_all():
    first, second = HumanEvalTask(), HumanEvalTask()
    held_out = first.eval_problems(len(first._split.eval))
    assert [p.id for p in held_out] == [p.id for p in second.eval_problems(len(held_out))]
    train = {p.id for p in first._split.train}
    assert train.isdisjoint(p.id for p in held_out) and len(train) + len(held_out) == 164
    sampled = first.train_problems(50, np.random.default_rng(0))
    assert {p.id for p in sampled} <= train and len({p.id for p in sampled}) == 50
    with pytest.raises(ValueError, match="exceeds the held-out split"):
        first.eval_problems(164)


def test_registered_with_the_papers_instruction():
    task = make_task("humaneval", {"timeout_s": 5})
    assert task.name == "humaneval"
    assert task.instruction.strip() == (
        "# There might be an error in the code above because of lack of understanding of the question. "
        "Please correct the error, if any, and rewrite the solution. Only output the final correct Python program!"
    )
