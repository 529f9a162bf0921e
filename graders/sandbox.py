"""Run one untrusted Python program and return what it did, whatever it does.

Walls, outermost first:
- bubblewrap (`bwrap`) where it works: new user, pid, network, ipc and uts namespaces (no network
  at all), nothing of the file system but /usr (and the interpreter's prefix) read-only, small
  private tmpfs (sized: bwrap --size) for /tmp, /dev/shm and the working directory, / and /dev
  read-only, --die-with-parent. In a pid namespace every
  process dies with the program, however detached.
  Without bwrap, the weaker fallback: a plain subprocess in a new session and a throwaway
  directory; it sees the whole file system (as far as its uid may) and the network.
  RunResult.isolation says which one ran.
- a uid of its own for every run when the grader is root: the program can read no root-only file,
  signal no other process, RLIMIT_NPROC bounds it alone, and at the end `kill -KILL -1` as that
  uid ends every process it made, detached or not (the fallback's only way to catch those).
- rlimits (CPU, address space, file size, processes), set by graders/sandbox_bootstrap.py, and a
  wall-clock deadline; captured output is capped, keeping its head and its tail.
- the bootstrap's audit-hook guard, which names a forbidden operation instead of letting it run.
The environment is cleared. The interpreter is the running one if an unprivileged uid can execute
it, else the system's python3 (/root is closed to other uids, and pyenv lives there): programs get
the standard library and nothing else.
"""
from __future__ import annotations

import collections
import functools
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from graders.sandbox_bootstrap import VIOLATION_EXIT

_BOOTSTRAP = (Path(__file__).parent / "sandbox_bootstrap.py").read_text()
_HOME = "/sandbox"  # the program's working directory inside bwrap
_TAIL_BYTES = 2048  # kept past the output cap: a verdict or traceback is printed last
_RUN_UID_BASE = 1 << 30  # per-run uids lie above any real account and below 2**31
_UIDS_PER_PROCESS = 256


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_mb: int = 16
    processes: int = 16
    output_bytes: int = 64 * 1024


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # negative: killed by that signal; None: still running at the deadline
    output: str  # stdout and stderr interleaved, capped
    timed_out: bool
    violation: str | None  # what the guard blocked, if it ended the program
    isolation: str  # "bwrap" or "fallback"
    wall_s: float


def run_python(source: str, limits: Limits = Limits(), isolation: str = "auto", guard: bool = True) -> RunResult:
    """isolation: "auto" (bwrap if it works here), "bwrap" or "fallback"."""
    if isolation == "auto":
        isolation = "bwrap" if bwrap_works() else "fallback"
    if isolation not in ("bwrap", "fallback"):
        raise ValueError(f"isolation must be auto, bwrap or fallback, got {isolation!r}")
    uid = RUN_UIDS.acquire()
    workdir = None if isolation == "bwrap" else tempfile.mkdtemp(prefix="sandbox-")
    try:
        if workdir is not None and uid is not None:
            os.chown(workdir, uid, uid)
        return _run(source, limits, isolation, guard, uid, workdir)
    finally:
        RUN_UIDS.release(uid)  # _run killed every process of it
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@functools.cache
def bwrap_works() -> bool:
    """True when bwrap is installed and can make its namespaces here (as the sandbox's uid)."""
    if shutil.which("bwrap") is None:
        return False
    uid = RUN_UIDS.acquire()
    try:
        return _run("pass", Limits(wall_s=10), "bwrap", False, uid, None).exit_code == 0
    finally:
        RUN_UIDS.release(uid)


def _run(source: str, limits: Limits, isolation: str, guard: bool, uid: int | None, workdir: str | None) -> RunResult:
    start = time.monotonic()
    python_args = [
        _sandbox_python(), "-I", "-S", "-B", "-c", _BOOTSTRAP,
        str(limits.cpu_s), str(limits.memory_mb << 20), str(limits.file_mb << 20),
        str(limits.processes if uid is not None else 0), str(int(guard)),
    ]
    if isolation == "bwrap":
        argv, cwd, env = _bwrap_args(limits) + python_args, None, {}
    else:
        argv, cwd, env = python_args, workdir, {"HOME": workdir, "TMPDIR": workdir}
    ids = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=cwd, env=env, start_new_session=True, **ids,
    )
    try:
        _send(proc, source)
        output, timed_out = _collect_output(proc, start + limits.wall_s, limits.output_bytes)
    finally:
        _kill_everything(proc, uid)
    exit_code = None if timed_out else proc.returncode
    if isolation == "bwrap" and exit_code is not None and exit_code > 128:
        exit_code = 128 - exit_code  # bwrap reports death by signal N as 128 + N; Popen's way is -N
    violation = _violation(output) if exit_code == VIOLATION_EXIT and guard else None
    return RunResult(exit_code, output, timed_out, violation, isolation, time.monotonic() - start)


def _bwrap_args(limits: Limits) -> list[str]:
    scratch = str(max(limits.file_mb, 1) << 20)
    args = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64", "/sbin"):  # merged-/usr links, or plain directories
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    python_home = _python_home()
    if not Path(python_home).is_relative_to("/usr"):
        args += ["--ro-bind", python_home, python_home]
    return args + [
        "--proc", "/proc", "--dev", "/dev",
        "--size", scratch, "--tmpfs", "/tmp",
        "--size", scratch, "--tmpfs", "/dev/shm",
        "--size", scratch, "--tmpfs", _HOME, "--chdir", _HOME,
        # bwrap's own / and /dev are tmpfs without a size: read-only, every writable path is sized
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--clearenv", "--setenv", "HOME", _HOME, "--setenv", "TMPDIR", _HOME,
        "--",
    ]


def _send(proc: subprocess.Popen, source: str) -> None:
    # The bootstrap reads all of stdin before the program starts, so this cannot deadlock.
    try:
        proc.stdin.write(source.encode())
        proc.stdin.close()
    except BrokenPipeError:  # it died at start-up; its output says why
        pass


def _collect_output(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[str, bool]:
    """Read until the program exits or the deadline passes, keeping the first `cap` bytes and the last few."""
    fd = proc.stdout.fileno()
    head, tail, dropped = bytearray(), bytearray(), 0
    exited = False
    while (remaining := deadline - time.monotonic()) > 0:
        # A short select timeout: a detached child can hold the pipe open after the program exits,
        # so EOF alone cannot tell that it has. Once it has, read only what is already in the pipe.
        if not select.select([fd], [], [], 0 if exited else min(remaining, 0.1))[0]:
            if exited:
                break
            exited = _exited(proc)
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:  # every writer closed the pipe: usually the program exiting, not always
            exited = _exits_by(proc, deadline)
            break
        kept = chunk[: cap - len(head)]
        head += kept
        if len(kept) < len(chunk):
            dropped += len(chunk) - len(kept)
            tail = (tail + chunk[len(kept):])[-_TAIL_BYTES:]
    timed_out = not exited
    text = head.decode(errors="replace")
    if dropped:
        kept_tail = tail.decode(errors="replace")
        text += f"\n[... {dropped - len(tail)} bytes of output cut ...]\n" + kept_tail
    return text, timed_out


def _exits_by(proc: subprocess.Popen, deadline: float) -> bool:
    while not _exited(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _exited(proc: subprocess.Popen) -> bool:
    # WNOWAIT leaves the process a zombie, so its pid (our process group id) cannot be reused
    # by another process before _kill_everything signals the group.
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_everything(proc: subprocess.Popen, uid: int | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if uid is not None:  # catches processes that left the group with setsid
        subprocess.run(["kill", "-KILL", "-1"], user=uid, group=uid, extra_groups=[], env={},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait()
    proc.stdout.close()


def _violation(output: str) -> str:
    marker = "sandbox: blocked "
    at = output.rfind(marker)
    return output[at + len(marker):].split("\n", 1)[0] if at >= 0 else "unknown operation"


class RunUids:
    """The uids of live runs, when the grader is root (None otherwise). A grader process owns a
    block of 256 (chosen by its pid, so no two processes share one); a uid is handed out again
    only after `release`, once every process of its run is dead, and least recently used first.
    Closing a run kills every process of its uid (`kill -KILL -1` as that uid): a uid shared by
    two live runs would let one run's end kill the other."""

    def __init__(self):
        self._lock = threading.Lock()
        self._free = collections.deque(range(_UIDS_PER_PROCESS))

    def acquire(self) -> int | None:
        if os.geteuid() != 0:
            return None
        with self._lock:
            if not self._free:
                raise RuntimeError(f"more than {_UIDS_PER_PROCESS} sandboxes open at once in one grader process")
            slot = self._free.popleft()
        return _RUN_UID_BASE + (os.getpid() % (1 << 22)) * _UIDS_PER_PROCESS + slot

    def release(self, uid: int | None) -> None:
        if uid is not None:
            with self._lock:
                self._free.append((uid - _RUN_UID_BASE) % _UIDS_PER_PROCESS)


RUN_UIDS = RunUids()


@functools.cache
def _sandbox_python() -> str:
    for candidate in (sys.executable, "/usr/local/bin/python3", "/usr/bin/python3"):
        path = os.path.realpath(candidate)
        if os.path.isfile(path) and (os.geteuid() != 0 or _world_executable(path)):
            return path
    raise RuntimeError(
        f"no Python interpreter an unprivileged uid can run ({sys.executable} is not): install python3"
    )


def _python_home() -> str:
    return str(Path(_sandbox_python()).parent.parent)


def _world_executable(path: str) -> bool:
    target = Path(path)
    dirs_open = all(p.stat().st_mode & stat.S_IXOTH for p in target.parents)
    return dirs_open and bool(target.stat().st_mode & stat.S_IXOTH)
