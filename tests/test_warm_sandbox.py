"""The warm sandbox's parts: plain data across the wall, the seccomp filter, answers in advance."""
import math
import os
import platform
import shutil
import subprocess
import threading
import time

import pytest

from graders import plain_data
from graders.humaneval_task import _Replay
from graders.sandbox import Limits, bwrap_works
from graders.warm_sandbox import ProgramRaised, WarmSandbox, _tree, encode_call
from processes import process_state

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bwrap missing or unusable here")


def test_plain_data_round_trips_builtins_exactly():
    values = [None, True, 0, -(10 ** 30), 1.5, -0.0, math.inf, "é", b"\x00\xff", 1 + 2j, [1, (2, 3)],
              (), {1: "a", (2, 3): [4]}, {1, 2}, frozenset({"x"}), {"dict": 1}, [[[]]]]
    for value in values:
        back = plain_data.loads(plain_data.dumps(value))
        assert back == value and type(back) is type(value) and repr(back) == repr(value)
    assert plain_data.loads(plain_data.dumps(True)) is True  # not 1


@pytest.mark.parametrize("value", [object(), type("Int", (int,), {})(3), type("L", (list,), {})(), print, range(3)])
def test_plain_data_refuses_anything_else(value):
    with pytest.raises(TypeError, match="not plain data"):
        plain_data.dumps(value)


@pytest.mark.parametrize("value", [list(range(plain_data.MAX_ITEMS)), [(0,) * 1000] * 200, {i: i for i in range(100_000)}])
def test_plain_data_refuses_more_than_its_values(value):
    with pytest.raises(TypeError, match="more than"):
        plain_data.dumps(value)
    plain_data.dumps(value[:-1] if type(value) is list else dict(list(value.items())[:-1]))


@pytest.mark.parametrize("text", [b'{"tuple": 1}', b'{"set": [[1]]}', b'{"a": 1, "b": 2}', b'{"dict": [[1]]}',
                                  b"[" * 100_000 + b"]" * 100_000, b"1" * 5000, b"not json"])
def test_plain_data_decoding_trusts_nothing(text):
    with pytest.raises(ValueError):
        plain_data.loads(text)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the filter is built for x86_64")
def test_seccomp_denies_processes_and_others_but_not_threads_or_self():
    from graders import sandbox_seccomp
    child_filter = sandbox_seccomp.ChildFilter()  # made before the fork, as the server makes it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports one character per check
        os.close(read)
        sandbox_seccomp.install(sandbox_seccomp.SERVER)  # as the server does, once
        child_filter.install(os.getpid())  # as each child does
        out = []
        for attempt in (os.fork, lambda: os.memfd_create("x"), lambda: os.kill(os.getppid(), 0),
                        lambda: os.execv("/bin/true", ["true"])):
            try:
                attempt()
                out.append("allowed")
            except PermissionError:
                out.append("denied")
        thread = threading.Thread(target=lambda: out.append("thread"))
        thread.start()
        thread.join()
        os.kill(os.getpid(), 0)
        os.write(write, ",".join(out).encode())
        os._exit(0)
    os.close(write)
    report = os.read(read, 1000).decode()
    os.waitpid(pid, 0)
    assert report == "denied,denied,denied,denied,thread"


@needs_bwrap
def test_answers_given_in_advance_then_live_calls_off_the_script():
    sandbox = WarmSandbox(Limits(wall_s=5, cpu_s=5, memory_mb=256), "bwrap")
    try:
        script = [encode_call("f", (1,), {}), encode_call("f", (2,), {})]
        run = sandbox.program("calls = []\ndef f(x):\n    calls.append(x)\n    if x == 2:\n"
                              "        raise ValueError(calls)\n    return x * 10\n", script)
        results = run.wait_loaded()
        assert results[0] == 10 and isinstance(results[1], ProgramRaised) and "[1, 2]" in str(results[1])
        candidate = _Replay(run, "f", script, results)
        assert candidate(1) == 10
        assert candidate(3) == 30  # off the script: a live call, into the same process
        assert run.call("f", 4) == 40
        with pytest.raises(ProgramRaised, match=r"\[1, 2, 3, 4, 2\]"):
            candidate(2)  # past the script's place now: live as well
        run.end()
    finally:
        sandbox.close()


@needs_bwrap
def test_a_program_asked_nothing_more_exits_once_it_has_answered_every_call_but_not_before():
    sandbox = WarmSandbox(Limits(wall_s=5, cpu_s=5, memory_mb=256), "bwrap")
    try:
        source = "def f(x):\n    if x == 0:\n        raise ValueError(x)\n    return x * 10\n"
        for script, answered in (([1, 2], [10, 20]), ([1, 0], [10, "raised"])):
            run = sandbox.program(source, [encode_call("f", (x,), {}) for x in script], exit_when_answered=True)
            results = run.wait_loaded()
            assert [r if not isinstance(r, ProgramRaised) else "raised" for r in results] == answered
            # Every call made (the last may raise): it exits by itself, a zombie until the server reaps
            # it at the end, which then reports its own exit (0), not the server's kill (-9).
            deadline = time.monotonic() + 20
            while not _zombies(sandbox) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _zombies(sandbox), "the program did not exit after its last answer"
            assert run.end().exit_code == 0
        # Stopped short (the first call raised): it stays up for the calls past it.
        run = sandbox.program(source, [encode_call("f", (x,), {}) for x in (0, 1)], exit_when_answered=True)
        assert len(run.wait_loaded()) == 1
        assert run.call("f", 3) == 30
        assert run.end().exit_code == -9
    finally:
        sandbox.close()


def _zombies(sandbox: WarmSandbox) -> list[int]:
    return [pid for pid in _tree(sandbox.proc.pid) if process_state(pid) == "Z"]


@needs_bwrap
def test_a_warm_sandbox_outlives_the_thread_that_started_it():
    # bwrap --die-with-parent follows the thread that started it; a pool thread that ends must not
    # take the sandbox with it.
    made = []
    starter = threading.Thread(target=lambda: made.append(WarmSandbox(Limits(wall_s=5, cpu_s=5, memory_mb=256), "bwrap")))
    starter.start()
    starter.join()
    (sandbox,) = made
    try:
        run = sandbox.program("def f():\n    return 'alive'\n", [encode_call("f", (), {})])
        assert run.wait_loaded() == ["alive"]
        run.end()
    finally:
        sandbox.close()


@needs_bwrap
def test_each_program_starts_fresh_though_its_child_was_forked_while_the_last_one_ran():
    sandbox = WarmSandbox(Limits(wall_s=5, cpu_s=5, memory_mb=256), "bwrap", guard=False)  # /tmp writable
    try:
        leave = ("import builtins, math, os, sys, threading, time\n"
                 "builtins.left = 1\nmath.pi = 3\nsys.modules['left'] = math\nos.environ['LEFT'] = '1'\n"
                 "open('/tmp/left', 'w').write('x')\nopen('left', 'w').write('x')\n"
                 "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
                 "def f():\n    return os.getpid()\n")
        run = sandbox.program(leave, [encode_call("f", (), {})])
        (first,) = run.wait_loaded()
        run.end(wait=False)
        look = ("import builtins, math, os, sys, threading\n"
                "def f():\n    return [hasattr(builtins, 'left'), math.pi == 3, 'left' in sys.modules, 'LEFT' in os.environ,\n"
                "            os.listdir('/tmp'), os.listdir('.'), threading.active_count(), os.getpid()]\n")
        run = sandbox.program(look, [encode_call("f", (), {})])
        (seen,) = run.wait_loaded()
        assert seen[:7] == [False, False, False, False, [], [], 1] and seen[7] != first
        run.end()
    finally:
        sandbox.close()


@needs_bwrap
def test_a_process_left_in_the_sandbox_is_counted_by_the_pids_cgroup_and_killed():
    # What a program that got round seccomp's fork ban would leave: a process of the sandbox's uid in
    # its pid namespace and cgroup. The server looks through /proc only when pids.current counts
    # more processes than bwrap, itself and the next program's child.
    sandbox = WarmSandbox(Limits(wall_s=5, cpu_s=5, memory_mb=256), "bwrap")
    try:
        if sandbox.cgroup is None or sandbox.uid is None or shutil.which("nsenter") is None:
            pytest.skip("needs a pids cgroup, root and nsenter")
        run = sandbox.program("def f():\n    return 1\n", [encode_call("f", (), {})])
        assert run.wait_loaded() == [1]
        run.end()
        server = _tree(sandbox.proc.pid)[2]  # bwrap, its pid-1 child, the server
        uid = str(sandbox.uid)
        enter = subprocess.Popen(["nsenter", "-t", str(server), "-p", "-S", uid, "-G", uid, "sleep", "60"])
        deadline = time.monotonic() + 60  # nsenter forks the sleep: seconds on a loaded machine
        while len(tree := _tree(enter.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(tree) >= 2, "nsenter did not start its child in the sandbox's pid namespace within 60 s"
        stray = tree[-1]  # the sleep, in the sandbox's pid namespace
        sandbox.cgroup.add(stray)
        run = sandbox.program("def f():\n    return 2\n", [encode_call("f", (), {})])
        assert run.wait_loaded() == [2]
        run.end()
        assert enter.wait(timeout=30) == -9 or not os.path.exists(f"/proc/{stray}")
        assert stray not in sandbox.cgroup.processes()
    finally:
        sandbox.close()
