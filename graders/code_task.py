"""The code task: complete a one-line Python function from a short specification and examples.

    # keep the items above 3, then multiply each by 2
    # f([1, 5, 4]) == [10, 8]
    def f(xs):
        return

is answered ` [x * 2 for x in xs if x > 3]`. A problem chains one to `max_steps_in_chain` steps, in
this order: a filter (above / below a constant), a map (add / subtract / multiply by a constant), a
final step (sum, count, largest, smallest, sorted). Items are digits 0-9 and constants small, so
the vocabulary stays small and an answer a few dozen tokens.

Why its mistakes are self-correctable, as the sort task's are: the specification states every step
with its operation and constant, and each step is one visible piece of the answer. A wrong constant
(`x > 4` for "above 3"), comparison (`<` for "above"), operation (`+` for "multiply") or a missing or
extra step is seen by reading the attempt against the comment line, and fixed by a local edit; the
examples check the attempt a second way (evaluate it on [1, 5, 4]). So reading attempt 1 can help
attempt 2.

Grading runs the program (the prompt, then the completion) in a warm sandbox
(graders/warm_sandbox.py) on the examples and on hidden inputs, and compares what it returns, plain
data only (graders/plain_data.py), with the expected values computed here, in the grader, from the
problem's specification (`Spec.__call__`, plain Python, never the answer's text): no expected value
enters the sandbox, and nothing a program prints, raises or returns passes but the right values, of
exactly the right types (an int, a list of ints). Everything the grader uses is rebuilt from the
problem's id, so a grade depends on no field a caller could change. The hidden inputs are drawn with
a seed derived from the id, and one of them holds every digit in descending order, so no one-edit
mistake (a constant off by one, the other comparison or operation, a step dropped) passes by luck.

The held-out split is fixed (its own seed): 2000 problems, none of whose prompts is ever a training
draw. A specification has a few thousand forms, so the same one may appear on both sides with
other examples (as a list to sort does in the sort task); the prompt is the problem.
"""
from __future__ import annotations

import hashlib
import operator
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from graders.base import GeneratedTask
from graders.registry import register_task
from graders.sandbox import Limits
from graders.verdicts import DETAIL_CHARS, finish, grade_in_sandbox, raised
from graders.warm_sandbox import ProgramRaised, ProgramStopped, SandboxError, SandboxPool, WarmSandbox, encode_call
from protos import Grade, Problem

_DIGITS = 10  # items are 0..9
_ENTRY = "f"

# name: (words, symbol, function). Filter thresholds are 2..7: either side of one holds two digits
# or more, so a filter step never leaves a list that sorting would not change.
_FILTERS = {"gt": ("keep the items above {c}", ">", operator.gt), "lt": ("keep the items below {c}", "<", operator.lt)}
_MAPS = {
    "add": ("add {c} to each", "+", operator.add),
    "sub": ("subtract {c} from each", "-", operator.sub),
    "mul": ("multiply each by {c}", "*", operator.mul),
}
_FINALS = {"sum": ("sum them", sum), "len": ("count them", len), "max": ("take the largest", max),
           "min": ("take the smallest", min), "sorted": ("sort them", sorted)}
_STEP = re.compile(r"([a-z]+)(\d*)")


@dataclass(frozen=True)
class Spec:
    """A problem's function: an optional filter, map and final step, each (name, constant) or a name."""

    keep: tuple[str, int] | None = None
    map: tuple[str, int] | None = None
    final: str | None = None

    @property
    def key(self) -> str:
        """The steps as one word, e.g. gt3.mul2.sum (the id's part that `parse` reads back)."""
        steps = [f"{s[0]}{s[1]}" for s in (self.keep, self.map) if s is not None]
        return ".".join(steps + ([self.final] if self.final else []))

    @classmethod
    def parse(cls, key: str) -> Spec:
        keep = map_ = final = None
        for step in key.split("."):
            match = _STEP.fullmatch(step)
            name, digits = match.groups() if match else ("", "")
            if name in _FILTERS and digits and keep is None and map_ is None and final is None:
                keep = (name, int(digits))
            elif name in _MAPS and digits and map_ is None and final is None:
                map_ = (name, int(digits))
            elif name in _FINALS and not digits and final is None:
                final = name
            else:
                raise ValueError(f"not a code-task step: {step!r} in {key!r}")
        return cls(keep, map_, final)

    @property
    def idle_step(self) -> bool:
        """A step the result (almost) never depends on: a map before a count, a filter above before the
        largest, below before the smallest (every map is increasing). Its mistakes would pass the tests."""
        return bool((self.map and self.final == "len")
                    or (self.keep and (self.keep[0], self.final) in (("gt", "max"), ("lt", "min"))))

    def words(self) -> str:
        parts = [_FILTERS[self.keep[0]][0].format(c=self.keep[1])] if self.keep else []
        parts += [_MAPS[self.map[0]][0].format(c=self.map[1])] if self.map else []
        parts += [_FINALS[self.final][0]] if self.final else []
        return ", then ".join(parts)

    def expression(self) -> str:
        """The reference answer, e.g. `sum([x * 2 for x in xs if x > 3])`."""
        items = "xs"
        if self.keep or self.map:
            value = f"x {_MAPS[self.map[0]][1]} {self.map[1]}" if self.map else "x"
            condition = f" if x {_FILTERS[self.keep[0]][1]} {self.keep[1]}" if self.keep else ""
            items = f"[{value} for x in xs{condition}]"
        return f"{self.final}({items})" if self.final else items

    def __call__(self, xs: list[int]) -> int | list[int]:
        """The expected value, computed from the steps (ValueError: the largest or smallest of nothing)."""
        if self.keep:
            xs = [x for x in xs if _FILTERS[self.keep[0]][2](x, self.keep[1])]
        if self.map:
            xs = [_MAPS[self.map[0]][2](x, self.map[1]) for x in xs]
        return _FINALS[self.final][1](xs) if self.final else xs


@register_task("code")
class CodeTask(GeneratedTask):
    name = "code"
    held_out_seed = 2_000_003
    instruction = (
        "\n# There might be an error in the code above. Check it against the comments and correct it.\n"
        "def f(xs):\n    return"
    )

    def __init__(self, max_steps_in_chain: int = 2, max_const: int = 5, examples: int = 2, hidden_tests: int = 5,
                 timeout_s: float = 2.0, memory_mb: int = 512, isolation: str = "auto", held_out: int = 2000):
        _check_int("max_steps_in_chain", max_steps_in_chain, 1, 3)
        _check_int("max_const", max_const, 2, 9)
        _check_int("examples", examples, 1, 3)
        _check_int("hidden_tests", hidden_tests, 1, 20)
        _check_int("memory_mb", memory_mb, 64, 65536)
        _check_int("held_out", held_out, 1, 100_000)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 60:
            raise ValueError(f"task.params.timeout_s must be a number of seconds in (0, 60], got {timeout_s!r}")
        if isolation not in ("auto", "bwrap", "fallback"):
            raise ValueError(f"task.params.isolation must be auto, bwrap or fallback, got {isolation!r}")
        self.max_steps, self.max_const, self.examples, self.hidden_tests = max_steps_in_chain, max_const, examples, hidden_tests
        self.limits = Limits(wall_s=float(timeout_s), cpu_s=max(1, int(timeout_s)), memory_mb=memory_mb)
        self.pool = SandboxPool(self.limits, isolation)
        self._split(held_out)

    # --- problems ---------------------------------------------------------------------------

    def _spec(self, rng: np.random.Generator) -> Spec:
        while True:
            kinds = rng.choice(3, size=int(rng.integers(1, self.max_steps + 1)), replace=False)
            keep = (str(rng.choice(list(_FILTERS))), int(rng.integers(2, _DIGITS - 2))) if 0 in kinds else None
            name = str(rng.choice(list(_MAPS))) if 1 in kinds else None
            map_ = (name, int(rng.integers(2 if name == "mul" else 1, self.max_const + 1))) if name else None
            spec = Spec(keep, map_, str(rng.choice(list(_FINALS))) if 2 in kinds else None)
            if not spec.idle_step:
                return spec

    def _draw(self, n: int, rng: np.random.Generator, exclude: set[str]) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            spec = self._spec(rng)
            examples = [_input(spec, rng, 3, 5) for _ in range(self.examples)]
            shown = "".join(f"# f({xs}) == {spec(xs)}\n" for xs in examples)
            prompt = f"# {spec.words()}\n{shown}def f(xs):\n    return"
            if prompt in exclude:
                continue
            problem_id = f"code-{spec.key}-" + "-".join(",".join(map(str, xs)) for xs in examples)
            out.append(Problem(id=problem_id, prompt=prompt, answer=" " + spec.expression()))
        return out

    # --- grading ----------------------------------------------------------------------------

    def grade(self, problem: Problem, completion: str) -> Grade:
        try:
            spec, cases = _cases(problem.id, self.hidden_tests)
        except ValueError as exc:  # the tests come from the id: one that is not ours has none
            return Grade(reward=0.0, status="error", detail=f"not a code-task problem {problem.id!r}: {exc}")
        source = f"def {_ENTRY}(xs):\n    return{completion}"
        return grade_in_sandbox(self.pool, lambda sandbox: self._grade_in(sandbox, source, cases))

    def _grade_in(self, sandbox: WarmSandbox, source: str, cases: list[tuple[list[int], object]]) -> Grade:
        try:
            calls = [encode_call(_ENTRY, (xs,), {}) for xs, _ in cases]
            run = sandbox.program(source, calls, exit_when_answered=True)  # asked nothing after them
        except SandboxError as exc:
            return Grade(reward=0.0, status="error", detail=f"sandbox failed: {exc}")
        try:
            verdict = _compare(cases, run.wait_loaded() or [])
        except SandboxError as exc:
            return Grade(reward=0.0, status="error", detail=f"sandbox failed: {exc}")
        except ProgramRaised as exc:  # at load: a syntax error, say
            verdict = raised(str(exc))
        except ProgramStopped as exc:
            verdict = exc
        return finish(run, verdict, self.limits)


@lru_cache(maxsize=8192)  # a training step grades each problem 2k times
def _cases(problem_id: str, hidden: int) -> tuple[Spec, list[tuple[list[int], object]]]:
    """The problem's specification and its (input, expected value) pairs: the prompt's examples, then
    `hidden` inputs: every digit, from 9 down (so a missing sort, a wrong threshold or constant shows),
    then inputs drawn with a seed of the id."""
    prefix, key, *examples = problem_id.split("-")
    if prefix != "code" or not examples:
        raise ValueError("no code-<steps>-<examples> id")
    spec = Spec.parse(key)
    inputs = [[int(v) for v in xs.split(",") if v] for xs in examples]
    probe = list(range(_DIGITS - 1, -1, -1))
    spec(probe)  # ValueError where no list of digits has an answer (the largest above 9): none to draw
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "big"))
    inputs += [probe] + [_input(spec, rng, 0, 8) for _ in range(hidden - 1)]
    return spec, [(xs, spec(xs)) for xs in inputs]


def _input(spec: Spec, rng: np.random.Generator, min_len: int, max_len: int) -> list[int]:
    """A list of digits the specification is defined on."""
    while not _defined(spec, xs := rng.integers(0, _DIGITS, size=int(rng.integers(min_len, max_len + 1))).tolist()):
        pass
    return xs


def _defined(spec: Spec, xs: list[int]) -> bool:
    try:
        spec(xs)
    except ValueError:  # the largest of nothing
        return False
    return True


def _compare(cases: list[tuple[list[int], object]], results: list) -> Grade:
    """Pass if every case's answer is the expected value, of exactly its type; else the first that is not."""
    for (xs, expected), got in zip(cases, results):
        if isinstance(got, ProgramRaised):
            verdict = raised(str(got))
            return Grade(reward=0.0, status=verdict.status, detail=f"f({xs}): {verdict.detail}"[:DETAIL_CHARS])
        if not _same(got, expected):
            return Grade(reward=0.0, status="fail", detail=f"f({xs}) returned {got!r}, expected {expected!r}"[:DETAIL_CHARS])
    if len(results) != len(cases):
        return Grade(reward=0.0, status="error", detail=f"sandbox failed: {len(results)} answers to {len(cases)} calls")
    return Grade(reward=1.0, status="pass")


def _same(got, expected) -> bool:
    """Equal and of the same exact types: True is not 1, 10.0 is not 10."""
    if type(expected) is list:
        return type(got) is list and len(got) == len(expected) and all(_same(g, e) for g, e in zip(got, expected))
    return type(got) is type(expected) and got == expected


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"task.params.{name} must be an integer in [{low}, {high}], got {value!r}")
