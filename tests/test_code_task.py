"""The code task: its problems, and its grader in the real sandbox (no mocks)."""
import contextlib
import os
import signal
import time
from dataclasses import replace

import numpy as np
import pytest

from graders.code_task import CodeTask, Spec, _cases
from graders.registry import make_task
from graders.warm_sandbox import _tree
from processes import process_ended
from protos import Problem


@pytest.fixture(scope="module")
def task():
    return make_task("code", {"timeout_s": 1.0})


@pytest.fixture(scope="module")
def problem(task):
    """`keep the items above 3, then multiply each by 2`, whatever the draw."""
    spec = Spec(keep=("gt", 3), map=("mul", 2))
    prompt = "# keep the items above 3, then multiply each by 2\n# f([1, 5, 4]) == [10, 8]\ndef f(xs):\n    return"
    return Problem(id=f"code-{spec.key}-1,5,4", prompt=prompt, answer=" " + spec.expression())


def test_problems_are_deterministic_and_the_held_out_split_is_never_drawn_for_training(task):
    again = CodeTask(timeout_s=1.0)
    assert task.eval_problems(2000) == again.eval_problems(2000)
    assert task.train_problems(50, np.random.default_rng(7)) == again.train_problems(50, np.random.default_rng(7))
    held_out = {p.prompt for p in task.eval_problems(2000)}
    assert len(held_out) == 2000
    assert not held_out & {p.prompt for p in task.train_problems(5000, np.random.default_rng(0))}
    with pytest.raises(ValueError, match="exceeds the held-out split"):
        task.eval_problems(2001)


def test_a_problem_is_a_short_function_with_its_spec_and_examples(task):
    for p in task.train_problems(200, np.random.default_rng(1)):
        spec_line, *examples, signature, body = p.prompt.split("\n")
        assert spec_line.startswith("# ") and signature == "def f(xs):" and body == "    return"
        assert 1 <= len(examples) <= 2 and all(e.startswith("# f([") for e in examples)
        spec = Spec.parse(p.id.split("-")[1])
        assert spec.words() == spec_line[2:] and p.answer == " " + spec.expression()
        assert len(p.answer) < 60  # a few dozen tokens at most
        digits = [7, 2, 9, 0, 4, 1, 8, 3, 6, 5]  # defined for every spec: each filter keeps one or more
        assert eval("lambda xs:" + p.answer)(digits) == spec(digits)  # the text is the function


def mistakes(spec: Spec) -> list[Spec]:
    """Every one-edit mistake of a spec: a constant off by one, the other comparison or operation, a step dropped."""
    out = [replace(spec, keep=None), replace(spec, map=None), replace(spec, final=None)]
    if spec.keep:
        name, c = spec.keep
        out += [replace(spec, keep=(name, c - 1)), replace(spec, keep=(name, c + 1)),
                replace(spec, keep=({"gt": "lt", "lt": "gt"}[name], c))]
    if spec.map:
        name, c = spec.map
        out += [replace(spec, map=(name, c - 1)), replace(spec, map=(name, c + 1))]
        out += [replace(spec, map=(other, c)) for other in ("add", "sub", "mul") if other != name]
    return [m for m in out if m != spec and (m.keep or m.map or m.final)]


SHORT_LISTS = [[]] + [[a] for a in range(10)] + [[a, b] for a in range(10) for b in range(10)]


def outcome(spec: Spec, xs: list[int]):
    try:
        return spec(xs)
    except ValueError as exc:  # the largest of nothing
        return str(exc)


@pytest.mark.parametrize("steps", [2, 3])
def test_the_tests_tell_every_one_edit_mistake_from_the_answer(steps):
    """No wrong constant, comparison, operation or missing step passes the problem's cases by luck
    (unless it is no mistake: the same function of lists of digits, as `x > 1` for `x > 2` before
    subtracting 2 and summing)."""
    task = CodeTask(max_steps_in_chain=steps)
    for p in task.train_problems(500, np.random.default_rng(3)):
        spec, cases = _cases(p.id, task.hidden_tests)
        for wrong in mistakes(spec):
            if all(outcome(wrong, xs) == outcome(spec, xs) for xs in SHORT_LISTS):
                continue  # the same function
            assert any(outcome(wrong, xs) != expected for xs, expected in cases), (p.id, wrong.expression())


def test_every_reference_answer_passes(task):
    problems = task.train_problems(40, np.random.default_rng(2)) + task.eval_problems(20)
    grades = [task.grade(p, p.answer) for p in problems]
    assert all(g.status == "pass" and g.reward == 1.0 for g in grades), [g for g in grades if g.status != "pass"]


@pytest.mark.parametrize("completion", [
    " [x * 2 for x in xs if x > 4]",  # wrong constant
    " [x * 2 for x in xs if x < 3]",  # wrong comparison
    " [x + 2 for x in xs if x > 3]",  # wrong operation
    " [x for x in xs if x > 3]",  # a missing step
    " sum([x * 2 for x in xs if x > 3])",  # an extra step
    " tuple(x * 2 for x in xs if x > 3)",  # the right values, of the wrong type
])
def test_a_wrong_answer_fails_and_says_on_which_input(task, problem, completion):
    grade = task.grade(problem, completion)
    assert grade.status == "fail" and grade.reward == 0.0
    assert grade.detail.startswith("f([") and "expected" in grade.detail


@pytest.mark.parametrize("completion, status", [
    (" 1 / 0", "fail"),  # raises
    (" xs.sort(", "fail"),  # not Python
    (" type('Eq', (list,), {'__eq__': lambda s, o: True})()", "fail"),  # always equal: not plain data
    (" object()", "fail"),
    (" print('pass') or [10, 8]", "fail"),  # the example's answer, printed "pass"
    (" __import__('os')._exit(0)", "fail"),
    (" __import__('sys').exit(0)", "fail"),
    (" [0 for _ in iter(int, 1)]", "timeout"),  # never ends
    (" __import__('os').fork()", "sandbox_violation"),  # blocked by the guard
    (" bytearray(1 << 34)", "sandbox_violation"),  # past the memory limit
])
def test_hostile_completions_never_pass(task, problem, completion, status):
    grade = task.grade(problem, completion)
    assert (grade.status, grade.reward) == (status, 0.0), grade


def test_the_grader_trusts_only_the_id(task, problem):
    forged = problem.model_copy(update={"answer": " 1", "prompt": "def f(xs):\n    return"})
    assert task.grade(forged, " 1").status == "fail"  # the tests come from the id, not the answer
    # another task's; a spec no list of digits has an answer to; an unknown step; no examples
    for foreign in ("sort-1-2", "code-gt9.max-1,2", "code-up3-1,2", "code-sum"):
        grade = task.grade(Problem(id=foreign, prompt="", answer=""), " xs")
        assert grade.status == "error" and "not a code-task problem" in grade.detail


def test_a_sandbox_that_died_gives_no_verdict(task, problem):
    sandbox = task.pool.acquire()
    # Every process of it, the server inside included, by PID, and each seen dead: killing bwrap alone
    # leaves the server a moment (its death follows bwrap's), in which it could still grade.
    tree = _tree(sandbox.proc.pid)
    for pid in reversed(tree):  # the deepest first; one may already be gone with its parent
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sandbox.proc.wait()
    deadline = time.monotonic() + 30
    while not all(process_ended(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(process_ended(pid) for pid in tree)
    task.pool.release(sandbox)
    grade = task.grade(problem, problem.answer)
    assert grade.status == "error" and "sandbox" in grade.detail
    assert task.grade(problem, problem.answer).status == "pass"  # the broken one was replaced


@pytest.mark.parametrize("params, named", [
    ({"max_steps_in_chain": 4}, "max_steps_in_chain"),
    ({"max_const": 1}, "max_const"),
    ({"max_const": "5"}, "max_const"),
    ({"examples": 0}, "examples"),
    ({"hidden_tests": 0}, "hidden_tests"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"memory_mb": 8}, "memory_mb"),
    ({"isolation": "docker"}, "isolation"),
    ({"max_step": 2}, "max_step"),
])
def test_bad_params_are_named(params, named):
    with pytest.raises(ValueError, match=named):
        make_task("code", params)


def test_a_short_training_run_grades_in_the_sandbox(tmp_path):
    from learner.driver.local_backend import LocalBackend
    from learner.driver.loop import TrainLoop
    from learner.model.tiny import build_untrained
    from protos import load_config
    from protos.config import ModelConfig

    cfg = load_config(None, [
        "task.name=code", "score.stage1_steps=1", "score.stage2_steps=1", "score.prompts_per_step=4",
        "score.samples_per_prompt=2", "score.max_new_tokens=16", "task.eval_size=4", "eval.every_steps=0", "seed=3",
    ])
    task = make_task(cfg.task.name, cfg.task.params)
    model_dir = build_untrained(ModelConfig(num_layers=2), task, tmp_path / "tiny", seed=0)
    records, backend = [], LocalBackend(cfg, model_dir)
    try:
        TrainLoop(cfg, task, backend, records.append, lambda _: None).train()
    finally:
        backend.close()
    steps = [r for r in records if r["kind"] == "train"]
    assert len(steps) == 2
    for r in steps:
        assert r["traces_trained"] == 8 and r["train_ungraded"] == 0  # every attempt got a verdict
        assert {"train_flagged_timeout", "train_flagged_sandbox_violation", "train_flagged_error"} <= r.keys()


@pytest.mark.slow
def test_the_code_config_trains_on_ray_with_its_grader_actors(tmp_path):
    """`learner.main --config cluster/configs/code.yaml`: the Ray path, its two grader actors grading every
    attempt in the warm sandbox while rollouts run a step ahead (an untrained model: verdicts, not passes)."""
    import json

    from e2e import run_cli, set_args
    from learner.model.tiny import build_untrained
    from protos.config import ModelConfig

    model_dir = build_untrained(ModelConfig(num_layers=2), make_task("code", {}), tmp_path / "tiny", seed=0)
    settings = {"output_dir": tmp_path / "runs", "model.path": model_dir, "score.stage1_steps": 2, "score.stage2_steps": 1,
                "score.prompts_per_step": 4, "score.samples_per_prompt": 2, "score.max_new_tokens": 16, "task.eval_size": 8}
    proc = run_cli(["--config", "cluster/configs/code.yaml"] + set_args(settings))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "actors: 1 rollout, 2 grader, 1 learner" in proc.stdout
    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "summary.json").exists()]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["stage"] for r in train] == [1, 1, 2]
    for r in train:
        assert r["traces_trained"] == 8 and r["train_ungraded"] == 0  # every attempt got a verdict
        assert r["train_flagged_sandbox_violation"] == r["train_flagged_error"] == 0
