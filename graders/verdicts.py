"""From what a program did in a warm sandbox to a Grade: the part every code task shares.

A code task decides what a program's answers mean (HumanEval's check(), the code task's expected
values); what it means when there are none is the same for all of them: the program raised, ran
into a limit, was blocked by the guard, exited, or the sandbox itself failed (no verdict: "error",
never "fail"). `grade_in_sandbox` runs one grading in a pooled sandbox and `finish` ends a program
once its verdict is known.
"""
from __future__ import annotations

import errno
import os
import signal
from typing import Callable

from graders.sandbox import Limits
from graders.sandbox_bootstrap import VIOLATION_EXIT
from graders.sandbox_server import SETUP_FAILED_EXIT, SETUP_FAILED_MARK
from graders.warm_sandbox import ProgramStopped, Program, SandboxError, SandboxPool, WarmSandbox
from protos import Grade

DETAIL_CHARS = 300
# Final exceptions that mean the program ran into a sandbox limit rather than failing on its own.
_LIMIT_ERRORS = ("MemoryError",) + tuple(f"OSError: [Errno {e}] {os.strerror(e)}" for e in (errno.EFBIG, errno.ENOSPC))


def grade_in_sandbox(pool: SandboxPool, grade: Callable[[WarmSandbox], Grade]) -> Grade:
    """`grade(sandbox)` in a sandbox of the pool; "error" if none could be started. The detail notes a
    sandbox weaker than the full one (no bwrap, no cgroup), so a grade says what it was given under."""
    try:
        sandbox = pool.acquire()
    except (OSError, SandboxError) as exc:
        return Grade(reward=0.0, status="error", detail=f"sandbox failed to start: {exc}")
    try:
        verdict = grade(sandbox)
    finally:
        pool.release(sandbox)
    notes = [" [fallback sandbox: no bwrap]" if sandbox.isolation == "fallback" else ""]
    notes.append(f" [{sandbox.unbounded}]" if sandbox.unbounded else "")
    return Grade(reward=verdict.reward, status=verdict.status, detail=(verdict.detail + "".join(notes)).strip())


def finish(run: Program, verdict: Grade | ProgramStopped, limits: Limits) -> Grade:
    """End `run`. A Grade is final: the sandbox cleans up while the grader goes on. A ProgramStopped
    is told apart once the program's exit status and output are in."""
    try:
        if isinstance(verdict, Grade):
            run.end(wait=False)
            return verdict
        return stopped(verdict, run.end(), limits)
    except SandboxError as exc:
        return Grade(reward=0.0, status="error", detail=f"sandbox failed: {exc}")


def raised(text: str) -> Grade:
    """The program raised `text` (its final exception line) where an answer was due."""
    if text.startswith(_LIMIT_ERRORS):
        return Grade(reward=0.0, status="sandbox_violation", detail=f"resource limit: {text[:DETAIL_CHARS]}")
    if text.startswith(("SystemExit", "KeyboardInterrupt")):
        return Grade(reward=0.0, status="fail", detail=f"exited before its tests finished ({text[:100]})")
    return Grade(reward=0.0, status="fail", detail=text[:DETAIL_CHARS])


def stopped(stop: ProgramStopped, end, limits: Limits) -> Grade:
    """A program that stopped answering: its deadline, a limit, the guard, or its own exit."""
    if stop.reason == "timeout":
        return Grade(reward=0.0, status="timeout", detail=f"wall-clock limit of {limits.wall_s:g}s")
    if stop.reason != "exit":  # too_big, bad_reply
        return Grade(reward=0.0, status="fail", detail=f"answered with no plain data: {stop}"[:DETAIL_CHARS])
    if end.exit_code == SETUP_FAILED_EXIT and SETUP_FAILED_MARK in end.output:  # the sandbox's fault
        return Grade(reward=0.0, status="error", detail=end.output.strip()[-DETAIL_CHARS:])
    if end.oom_killed:
        return Grade(reward=0.0, status="sandbox_violation", detail=f"resource limit: memory ({limits.memory_mb} MiB, cgroup)")
    if end.exit_code in (-signal.SIGXCPU, -signal.SIGKILL):
        return Grade(reward=0.0, status="timeout", detail=f"CPU limit of {limits.cpu_s}s")
    if end.exit_code == VIOLATION_EXIT:
        marker = "sandbox: blocked "
        at = end.output.rfind(marker)
        blocked = end.output[at + len(marker):].split("\n", 1)[0] if at >= 0 else "an operation"
        return Grade(reward=0.0, status="sandbox_violation", detail=f"blocked {blocked}")
    last = (end.output.rstrip().splitlines() or [""])[-1][-DETAIL_CHARS:]
    if last.startswith(_LIMIT_ERRORS):
        return Grade(reward=0.0, status="sandbox_violation", detail=f"resource limit: {last}")
    return Grade(reward=0.0, status="fail", detail=f"exited before its tests finished (exit code {end.exit_code})")
