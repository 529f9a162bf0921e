"""Warm sandboxes: one bwrap and one interpreter start-up for many graded programs.

A WarmSandbox is graders/sandbox.py's sandbox (bwrap namespaces, a uid of its own when the grader
is root, read-only file system, sized tmpfs for /tmp, /dev/shm and the working directory) holding
graders/sandbox_server.py, which forks a fresh child per program (ahead of it, so a program's start
waits for no fork) with its own rlimits, seccomp filter (graders/sandbox_seccomp.py: a part the
server loads once for itself and every child, a short part per child) and audit-hook guard.
Around the whole sandbox, where the machine allows one, a memory and pids cgroup
(graders/cgroup.py); where it does not, `unbounded` names what is missing and every grade says so.

A program answers calls of its functions on plain data with plain data (graders/plain_data.py),
so the grader, not the program, decides what the answers mean: calls known in advance all at
once, as soon as it has loaded (`WarmSandbox.program(source, calls)`, `Program.wait_loaded`), others
one round trip each (`Program.call`). What can go wrong is told apart:
  ProgramRaised   the program raised (an Exception, so a test may expect one);
  ProgramStopped  it stopped answering: its deadline, its exit, an oversized or malformed reply;
  SandboxError    the sandbox itself failed (crash, protocol, the grader's own deadline): no verdict.
The last two are BaseExceptions, so a test's `except Exception` cannot swallow them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from graders import plain_data
from graders.cgroup import SandboxCgroup
from graders.sandbox import RUN_UIDS, Limits, _bwrap_args, _HOME, _sandbox_python, bwrap_works
from graders.sandbox_server import read_frame, write_frame

_HERE = Path(__file__).parent
_SERVER = (_HERE / "sandbox_server.py").read_text()
_MODULES = {name: (_HERE / f"{name}.py").read_text() for name in ("sandbox_seccomp", "plain_data", "sandbox_bootstrap")}
_START_S = 15.0  # a sandbox that is not ready by then is broken
GRACE_S = 5.0  # past a program's own deadline, how long the grader waits for the server's word
MAX_REPLY = 1 << 20  # bytes in one answer of a program
# bwrap's --die-with-parent is PR_SET_PDEATHSIG, which fires when the *thread* that started it
# ends: a grading thread of a short-lived pool would take its warm sandbox with it. One thread that
# lives as long as the grader starts them all.
_SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawner")


class ProgramRaised(Exception):
    pass


class ProgramStopped(BaseException):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail  # reason: timeout, exit, too_big, bad_reply


class SandboxError(BaseException):
    pass


@dataclass(frozen=True)
class ProgramEnd:
    exit_code: int | None  # negative: killed by that signal; None: killed by the server
    output: str  # the program's stdout and stderr: head and tail
    oom_killed: bool  # the memory cgroup's OOM killer ended it


class WarmSandbox:
    def __init__(self, limits: Limits = Limits(), isolation: str = "auto", guard: bool = True, grace_s: float = GRACE_S):
        if isolation == "auto":
            isolation = "bwrap" if bwrap_works() else "fallback"
        if isolation not in ("bwrap", "fallback"):
            raise ValueError(f"isolation must be auto, bwrap or fallback, got {isolation!r}")
        self.limits, self.isolation, self.guard, self.grace_s = limits, isolation, guard, grace_s
        self.broken = False
        self.uid = RUN_UIDS.acquire()
        self.cgroup = SandboxCgroup.create(limits.memory_mb, limits.processes)
        self.unbounded = "" if self.cgroup else "no memory/pids cgroup here: RLIMIT_AS, sized tmpfs and seccomp only"
        self.workdir = None if isolation == "bwrap" else tempfile.mkdtemp(prefix="sandbox-")
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        python = [_sandbox_python(), "-I", "-S", "-B", "-c", _SERVER]
        if self.isolation == "bwrap":
            argv, cwd, env = _bwrap_args(self.limits) + python, None, {}
            home, scratch, output_dir = _HOME, [_HOME, "/tmp", "/dev/shm"], "/tmp"
        else:
            home = os.path.join(self.workdir, "home")
            os.mkdir(home)
            argv, cwd, env = python, self.workdir, {"HOME": home, "TMPDIR": home}
            scratch, output_dir = [home], self.workdir
            if self.uid is not None:
                for path in (self.workdir, home):
                    os.chown(path, self.uid, self.uid)
        ids = {} if self.uid is None else {"user": self.uid, "group": self.uid, "extra_groups": []}
        fds = self.cgroup.server_fds() if self.cgroup else {"cgroup_fd": None, "pids_fd": None, "oom_fd": None}
        passed = tuple(fd for fd in fds.values() if fd is not None)
        try:
            self.proc = _SPAWNER.submit(
                subprocess.Popen, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                cwd=cwd, env=env, start_new_session=True, pass_fds=passed, **ids,
            ).result()
        finally:
            for fd in passed:
                os.close(fd)
        self._send_json({"modules": _MODULES, "home": home, "scratch": scratch, "output_dir": output_dir,
                         "max_reply": MAX_REPLY, "pid_namespace": self.isolation == "bwrap", **fds,
                         "limits": {"wall_s": self.limits.wall_s, "cpu_s": self.limits.cpu_s,
                                    "memory_bytes": self.limits.memory_mb << 20, "file_bytes": self.limits.file_mb << 20,
                                    "processes": self.limits.processes if self.uid is not None else 0,
                                    "guard": self.guard}})
        ready = self._receive(time.monotonic() + _START_S)
        if ready[0] != "S" or "ready" not in ready[1]:
            raise SandboxError(f"sandbox did not start: {ready!r}"[:300])
        if self.cgroup is not None:  # nothing has forked a program yet: the tree is complete
            for pid in _tree(self.proc.pid):
                self.cgroup.add(pid)

    def program(self, source: str, calls: list[dict] | None = None, exit_when_answered: bool = False) -> Program:
        """Start a program; `calls` (from `encode_call`), if known in advance, are answered as soon as it
        has loaded, all in one reply (see wait_loaded). `exit_when_answered`: the grader needs nothing
        more once every one of them was made, so the program then exits (and is ended sooner)."""
        if self.broken:
            raise SandboxError("sandbox already failed")
        return Program(self, source, calls, exit_when_answered)

    def settle(self) -> None:
        """Between programs: wait until the server has ended the last one (killed, cleaned up after,
        the next children forked); SandboxError if it does not say so in time."""
        if self.broken:
            raise SandboxError("sandbox already failed")
        self._send(b"P")
        kind, message = self._receive(time.monotonic() + self.limits.wall_s + self.grace_s)
        if kind != "S" or "idle" not in message:
            self.broken = True
            raise SandboxError("the sandbox's server did not settle")

    def close(self) -> None:
        self.broken = True
        proc = getattr(self, "proc", None)
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.uid is not None:  # anything that left the group: every process of this uid
                subprocess.run(["kill", "-KILL", "-1"], user=self.uid, group=self.uid, extra_groups=[], env={},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
            self.proc = None
        RUN_UIDS.release(self.uid)  # every process of it is dead
        self.uid = None  # so that a second close releases nothing
        if self.cgroup is not None:
            deadline = time.monotonic() + 2
            while self.cgroup.processes() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.cgroup.remove()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _send_json(self, message: dict, op: bytes = b"") -> None:
        self._send(op + json.dumps(message).encode())

    def _send(self, frame: bytes) -> None:
        try:
            write_frame(self.proc.stdin.fileno(), frame)
        except OSError as exc:
            self.broken = True
            raise SandboxError(f"sandbox gone: {exc}") from None

    def _receive(self, deadline: float) -> tuple[str, object]:
        """("C", the child's raw reply) or ("S", the server's message); SandboxError if neither comes."""
        frame = read_frame(self.proc.stdout.fileno(), MAX_REPLY + 1, deadline)
        if not isinstance(frame, bytes) or not frame:
            self.broken = True
            what = {None: "the sandbox exited", "timeout": "the sandbox did not answer in time"}.get(frame, "bad frame")
            raise SandboxError(what)
        if frame[:1] == b"C":
            return "C", frame[1:]
        try:
            return "S", json.loads(frame[1:])
        except ValueError:
            self.broken = True
            raise SandboxError("the sandbox's server sent garbage") from None


class Program:
    """One program's run in a warm sandbox, from its first line to `end()`."""

    def __init__(self, sandbox: WarmSandbox, source: str, calls: list[dict] | None = None,
                 exit_when_answered: bool = False):
        self.sandbox = sandbox
        limits = sandbox.limits
        self.deadline = time.monotonic() + limits.wall_s
        self.stopped: ProgramStopped | None = None
        self.exit_code: int | None = None  # set when the program exits before its end
        self.ended = False  # quietly ended (end(wait=False))
        sandbox._send_json({"source": source, "calls": calls, "exit_when_answered": exit_when_answered}, b"S")

    def wait_loaded(self) -> list | None:
        """Returns once the program's top level has run (its functions exist), with the answers to
        the calls given in advance (each a value, or a ProgramRaised to raise); raises as `call` does."""
        return self._answer(loading=True)

    def call(self, name: str, *args, **kwargs):
        """What the program's function `name` returns on these (plain) arguments, as plain data."""
        if self.stopped is not None:
            raise self.stopped
        self.sandbox._send_json(encode_call(name, args, kwargs), b"C")
        return self._answer()

    def end(self, wait: bool = True) -> ProgramEnd | None:
        """Kill the program and clean up after it. wait=False: the grader needs nothing more from it,
        so the sandbox's server cleans up while the grader goes on, and says nothing (the grader's
        next program can be started at once: the server ends this one first; if it cannot, that
        program's first answer never comes, a SandboxError)."""
        if not wait:
            if not self.ended:  # a second quiet end (the grader ended it early) asks nothing more
                self.sandbox._send(b"Q")
                self.ended = True
            return None
        self.sandbox._send(b"E")
        kind, message = self.sandbox._receive(self.deadline + self.sandbox.grace_s)
        if kind != "S" or "end" not in message:
            self.sandbox.broken = True
            raise SandboxError("the sandbox's server did not end the program")
        exit_code = self.exit_code if self.exit_code is not None else message["end"]
        return ProgramEnd(exit_code, message["output"], message["oom"])

    def _answer(self, loading: bool = False):
        kind, message = self.sandbox._receive(self.deadline + self.sandbox.grace_s)
        if kind == "S":
            if "timeout" in message or message.get("exit", 0) is None:
                self.stopped = ProgramStopped("timeout")
            elif "exit" in message:
                self.exit_code = message["exit"]
                self.stopped = ProgramStopped("exit", f"exit code {message['exit']}")
            else:
                self.stopped = ProgramStopped("too_big", f"an answer of {message.get('too_big')} bytes")
            raise self.stopped
        try:
            reply = json.loads(message)
            if type(reply) is not dict or len(reply) != 1:
                raise ValueError("not one key")
            (key, body), = reply.items()
            if key == "loaded" and body is True:
                return None
            if key == "results" and type(body) is list:
                return [_result(entry) for entry in body]
            if loading and key == "value":
                raise ValueError("a value before any call")
            result = _result(reply)
            if isinstance(result, ProgramRaised):
                raise result
            return result
        except (RecursionError, TypeError, ValueError) as exc:
            self.stopped = ProgramStopped("bad_reply", f"{type(exc).__name__}: {exc}"[:200])
            raise self.stopped from None


class SandboxPool:
    """Warm sandboxes for concurrent graders: one per thread grading at once, started lazily."""

    def __init__(self, limits: Limits = Limits(), isolation: str = "auto", grace_s: float = GRACE_S):
        self.limits, self.isolation, self.grace_s = limits, isolation, grace_s
        self._idle: list[WarmSandbox] = []
        self._lock = threading.Lock()
        # Closed when the pool is collected or the interpreter exits, so no cgroup is left behind.
        weakref.finalize(self, _close_all, self._idle)

    def acquire(self) -> WarmSandbox:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return WarmSandbox(self.limits, self.isolation, grace_s=self.grace_s)

    def release(self, sandbox: WarmSandbox) -> None:
        if sandbox.broken:
            sandbox.close()
            return
        with self._lock:
            self._idle.append(sandbox)

    def close(self) -> None:
        with self._lock:
            _close_all(self._idle)


def _close_all(sandboxes: list[WarmSandbox]) -> None:
    while sandboxes:
        sandboxes.pop().close()


def encode_call(name: str, args: tuple | list, kwargs: dict) -> dict:
    """A call of the program's function `name` as it travels: TypeError if an argument is not plain data."""
    return {"name": name, "args": plain_data.encode(list(args)), "kwargs": plain_data.encode(kwargs)}


def _result(reply) -> object:
    """The value of one answer, or the ProgramRaised it stands for; ValueError if it is neither."""
    if type(reply) is dict and len(reply) == 1:
        (key, body), = reply.items()
        if key == "value":
            return plain_data.decode(body)
        if key == "raised" and type(body) is str:
            return ProgramRaised(body)
    raise ValueError(f"not an answer: {str(reply)[:100]}")


def _tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found
