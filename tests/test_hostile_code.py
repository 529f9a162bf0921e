"""Completions written to game the HumanEval grader or to hurt the node, graded for real in bwrap.

Each is a completion of HumanEval/53 `add(x, y)`. Every case asserts the grade and that nothing
escaped: no file on the host, no process left in the sandbox's cgroup, its memory back to where it
was, and the same warm sandbox grading the next program correctly. Many cases first switch the
in-process guard off (`os._exit` replaced: the guard ends a program through it), so what holds
them is the kernel: seccomp, rlimits, namespaces, the cgroup.
"""
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from graders.humaneval_task import HumanEvalTask
from graders.sandbox import bwrap_works
from graders.warm_sandbox import SandboxPool

pytestmark = pytest.mark.skipif(not bwrap_works(), reason="bwrap missing or unusable here")

MARK = f"escaped-{uuid.uuid4().hex[:8]}"
GUARD_OFF = "    import os\n    os._exit = lambda code: None\n"
# (completion of add(x, y), expected status, text expected in the detail)
HOSTILE = {
    "always-equal __eq__": (
        "    class Yes:\n        def __eq__(self, other):\n            return True\n    return Yes()\n",
        "fail", "not plain data"),
    "int subclass equal to all": (
        "    class Int(int):\n        def __eq__(self, other):\n            return True\n    return Int(0)\n",
        "fail", "not plain data"),
    "__class__ that lies": (
        "    class Fake:\n        __class__ = int\n        def __eq__(self, other):\n            return True\n"
        "    return Fake()\n", "fail", "not plain data"),
    "settrace replaces check's code": (
        "    return 0\n\nimport sys\n\ndef _trace(frame, event, arg):\n"
        "    if frame.f_code.co_name == 'check':\n"
        "        frame.f_globals['check'].__code__ = (lambda candidate: None).__code__\n"
        "    return _trace\n\nsys.settrace(_trace)\n", "fail", "a test failed"),
    "reads constants from every frame and code object": (
        "    import gc, sys\n    found = [c for o in gc.get_objects() if type(o).__name__ == 'code'\n"
        "             for c in o.co_consts if type(c) is int]\n"
        "    frame = sys._getframe()\n    while frame:\n"
        "        found += [v for v in frame.f_locals.values() if type(v) is int]\n        frame = frame.f_back\n"
        "    return max(found)\n", "fail", "a test failed"),
    "patches builtins and the harness": (
        "    return 0\n\nimport builtins, json\nbuiltins.AssertionError = type('Never', (BaseException,), {})\n"
        "json.dumps = lambda *a, **k: '{\"value\": true}'\njson.loads = lambda *a, **k: {'name': 'add'}\n",
        "fail", "a test failed"),
    "SystemExit(0) as success": ("    raise SystemExit(0)\n", "fail", "before its tests finished"),
    "BaseException of its own": (
        "    class Passed(BaseException):\n        pass\n    raise Passed('all tests passed')\n",
        "fail", "Passed: all tests passed"),
    "forged replies on every descriptor": (
        "    import os, struct\n    body = b'{\"value\": true}'\n    for fd in range(1024):\n"
        "        for _ in range(20):\n            try:\n"
        "                os.write(fd, struct.pack('>I', len(body)) + body)\n"
        "            except OSError:\n                pass\n    return 0\n", "fail", "no plain data"),
    "guard off, write outside, fork": (
        GUARD_OFF + f"    open('/tmp/{MARK}', 'w').write('x')\n    open('/dev/shm/{MARK}', 'w').write('x')\n"
        "    os.fork()\n    return x + y\n", "fail", "PermissionError"),
    "guard off, fork bomb": (GUARD_OFF + "    while True:\n        os.fork()\n", "fail", "PermissionError"),
    "guard off, exec a shell": (GUARD_OFF + "    os.execv('/bin/sh', ['sh', '-c', 'sleep 100'])\n",
                                "fail", "PermissionError"),
    "guard off, memfd": (GUARD_OFF + "    fd = os.memfd_create('hog')\n    return x + y\n", "fail", "PermissionError"),
    "guard off, SysV shared memory": (
        GUARD_OFF + "    import ctypes\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    if libc.shmget(0, 1 << 28, 0o1600) < 0:\n        raise OSError(ctypes.get_errno(), 'shmget')\n"
        "    return x + y\n", "fail", "PermissionError: [Errno 1]"),
    "guard off, /dev/shm beyond its size": (
        GUARD_OFF + "    with open('/dev/shm/hog', 'wb') as f:\n        for _ in range(64):\n"
        "            f.write(bytes(1 << 20))\n", "sandbox_violation", "resource limit"),
    "guard off, kill the server and init": (
        GUARD_OFF + "    import signal\n    for pid in (os.getppid(), 1, -1):\n        try:\n"
        "            os.kill(pid, signal.SIGKILL)\n        except PermissionError:\n            pass\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n", "fail", "PermissionError"),
    "guard off, a socket": (GUARD_OFF + "    import socket\n    socket.socket()\n", "fail", "PermissionError"),
    "guard off, the server's memory and descriptors": (
        GUARD_OFF + "    open(f'/proc/{os.getppid()}/fd/1', 'wb')\n", "fail", "PermissionError"),
    "guard off, ptrace the server": (
        GUARD_OFF + "    import ctypes\n    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    if libc.ptrace(16, os.getppid(), 0, 0) != 0:\n        raise OSError(ctypes.get_errno(), 'ptrace')\n",
        "fail", "PermissionError: [Errno 1]"),
    "thread bomb": (
        "    import threading, time\n    while True:\n"
        "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
        "fail", "can't start new thread"),
    "sleeps in finally, signals ignored": (
        "    import signal, time\n    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
        "        signal.signal(s, signal.SIG_IGN)\n    try:\n        while True:\n            pass\n"
        "    finally:\n        time.sleep(60)\n", "timeout", "limit"),
    "guard off, closes its reply pipe and spins": (
        GUARD_OFF + "    for fd in range(3, 64):\n        try:\n            os.close(fd)\n"
        "        except OSError:\n            pass\n    while True:\n        pass\n", "timeout", "limit"),
    # Its output file has no name (O_TMPFILE): links where one might be are never read.
    "links the server's memory where an output file might be": (
        "    import os\n    for path in ('/tmp/.program-output', '/tmp/output', './output'):\n"
        "        os.symlink(f'/proc/{os.getppid()}/mem', path)\n    os._exit(3)\n", "fail", "exit code 3"),
    "output flood": ("    while True:\n        print('x' * 10000)\n", "sandbox_violation", "File too large"),
    "answer flood": ("    return 'x' * (4 << 20) if x == 0 else x + y\n", "fail", "no plain data"),
    "deeply nested answer": (
        "    a = []\n    for _ in range(100000 if x == 0 else 0):\n        a = [a]\n    return a or x + y\n",
        "fail", "RecursionError"),
    "never finishes loading": ("    return x + y\n\nwhile True:\n    pass\n", "timeout", "limit"),
}


@pytest.fixture(scope="module")
def task():
    task = HumanEvalTask(timeout_s=2, memory_mb=256, isolation="bwrap")
    yield task
    task.pool.close()


def sandbox_of(task):
    (sandbox,) = task.pool._idle  # one grading thread: one warm sandbox
    sandbox.settle()  # the last program's clean-up done
    return sandbox


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_completion_gets_no_reward_and_nothing_escapes(task, case):
    add = task.problem("HumanEval/53")
    assert task.grade(add, "    return x + y\n").status == "pass"
    sandbox = sandbox_of(task)
    # bwrap, its pid-1 child, the server, and the two children set up for the next programs (one of
    # them for the hostile one). Told apart by the process tree, not by pid order: pids wrap around.
    pids = settled_processes(sandbox.cgroup) if sandbox.cgroup else None
    sandbox_processes = _tree(sandbox.proc.pid)[:3]
    memory = sandbox.cgroup.memory_bytes() if sandbox.cgroup else None
    completion, status, detail = HOSTILE[case]
    start = time.monotonic()
    grade = task.grade(add, completion)
    assert (grade.status, grade.reward) == (status, 0.0), grade
    assert detail in grade.detail
    assert time.monotonic() - start < task.limits.wall_s + 2
    assert not Path(f"/tmp/{MARK}").exists() and not Path(f"/dev/shm/{MARK}").exists()
    assert sandbox_of(task) is sandbox and not sandbox.broken  # the same sandbox, unharmed
    if sandbox.cgroup is not None:
        after = settled_processes(sandbox.cgroup)
        assert _tree(sandbox.proc.pid)[:3] == sandbox_processes and set(sandbox_processes) < set(after)
        assert len(set(pids) - set(after)) == 1  # the program's process is gone, the other child waits on
        assert memory_settles(sandbox.cgroup, memory + (16 << 20))
    # The next program in that sandbox starts clean: no file of the last one, right answer passes.
    leftovers = f"    import os\n    assert not os.path.exists('/tmp/{MARK}') and not os.listdir('/dev/shm')\n"
    assert task.grade(add, leftovers + "    return x + y\n").status == "pass"


def test_memory_the_rlimit_does_not_see_is_bounded_by_the_cgroup():
    # tmpfs files are not address space: with sized tmpfs larger than the memory limit, only the
    # memory cgroup stops a program that fills them.
    task = HumanEvalTask(timeout_s=5, memory_mb=64, isolation="bwrap")
    task.limits = type(task.limits)(**{**task.limits.__dict__, "file_mb": 100})
    task.pool = SandboxPool(task.limits, "bwrap")
    add = task.problem("HumanEval/53")
    try:
        task.grade(add, "    return x + y\n")
        sandbox = sandbox_of(task)
        if sandbox.cgroup is None:
            pytest.skip("no memory cgroup on this machine")
        before = sandbox.cgroup.memory_bytes()
        hog = ("    for top in ('/tmp', '/dev/shm', '.'):\n        with open(f'{top}/hog', 'wb') as f:\n"
               "            for _ in range(90):\n                f.write(bytes(1 << 20))\n")
        grade = task.grade(add, GUARD_OFF + hog)
        assert (grade.status, grade.reward) == ("sandbox_violation", 0.0) and "memory" in grade.detail, grade
        assert memory_settles(sandbox.cgroup, before + (16 << 20))
        assert task.grade(add, "    return x + y\n").status == "pass"
    finally:
        task.pool.close()


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_sandbox_that_fails_gives_no_verdict_then_is_replaced(how):
    task = HumanEvalTask(timeout_s=1, isolation="bwrap")
    task.pool = SandboxPool(task.limits, "bwrap", grace_s=0.5)
    add = task.problem("HumanEval/53")
    try:
        assert task.grade(add, "    return x + y\n").status == "pass"
        sandbox = sandbox_of(task)
        server = _tree(sandbox.proc.pid)[2]  # bwrap, its pid-1 child, the server, the next programs' children
        hit = (lambda: os.kill(server, signal.SIGKILL)) if how == "killed" else (lambda: os.kill(server, signal.SIGSTOP))
        threading.Timer(0.3, hit).start()
        grade = task.grade(add, "    import time\n    time.sleep(0.8)\n    return x + y\n")
        assert (grade.status, grade.reward) == ("error", 0.0) and "sandbox failed" in grade.detail, grade
        assert task.pool._idle == [] and sandbox.proc is None  # closed, not reused
        assert task.grade(add, "    return x + y\n").status == "pass"  # a fresh sandbox
    finally:
        task.pool.close()


def settled_processes(cgroup) -> list[int]:
    """The sandbox's processes once the server has set up the next programs' children (5 in all)."""
    deadline = time.monotonic() + 20  # milliseconds as a rule; generous for a loaded machine
    while len(found := cgroup.processes()) != 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(found) == 5, found
    return found


def memory_settles(cgroup, limit: int) -> bool:
    """The kernel frees a dead program's pages (its deleted tmpfs files with them) a moment later."""
    deadline = time.monotonic() + 20  # a moment as a rule; generous for a loaded machine
    while cgroup.memory_bytes() >= limit:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _tree(pid):
    from graders.warm_sandbox import _tree
    return _tree(pid)
