"""The sandbox against hostile programs, on both paths (bwrap and the plain-subprocess fallback).

These run with the audit-hook guard off, so what is tested is the OS walls themselves; the guard
is tested at the end and through the HumanEval grader (tests/test_humaneval.py).
"""
import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from graders.sandbox import Limits, RunUids, bwrap_works, run_python

REPO = Path(__file__).resolve().parents[1]
LIMITS = Limits(wall_s=3, cpu_s=3, memory_mb=512, processes=16, output_bytes=64 * 1024)
IS_ROOT = os.geteuid() == 0


@pytest.fixture(params=[
    pytest.param("bwrap", marks=pytest.mark.skipif(not bwrap_works(), reason="bwrap missing or unusable here")),
    "fallback",
])
def isolation(request):
    return request.param


def run(source: str, isolation: str, limits: Limits = LIMITS):
    return run_python(source, limits, isolation, guard=False)


def assert_next_run_works(isolation: str) -> None:
    result = run("print(6 * 7)", isolation)
    assert (result.exit_code, result.output, result.isolation) == (0, "42\n", isolation)


def marked(source: str, marker: str) -> str:
    """A program that re-executes itself with `marker` in its argv, so it and all its forks carry it."""
    return (
        "import os, sys\n"
        f"if {marker!r} not in sys.argv:\n"
        f"    os.execv(sys.executable, [sys.executable, '-I', '-S', '-c', {source!r}, {marker!r}])\n"
    )


def survivors(marker: str, grace_s: float = 3.0) -> list[int]:
    """Live processes whose command line holds `marker`, after `grace_s` for SIGKILLed ones to go.
    A zombie's command line is empty: it runs nothing and holds nothing but a pid."""
    deadline = time.monotonic() + grace_s
    while True:
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:  # exited while we looked
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def new_marker() -> str:
    return f"sandbox-probe-{uuid.uuid4().hex}"


def test_runs_a_program_and_reports_output_and_exit_code(isolation):
    result = run("import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr)\nsys.exit(3)", isolation)
    assert result.exit_code == 3 and not result.timed_out
    assert result.output == "out\nerr\n"


def test_environment_is_cleared_and_stdlib_works(isolation):
    os.environ["SANDBOX_SECRET"] = "do-not-leak"
    try:
        result = run("import os, hashlib, json\nprint(json.dumps(sorted(os.environ)))\nprint(hashlib.md5(b'').hexdigest())", isolation)
    finally:
        del os.environ["SANDBOX_SECRET"]
    names, digest = result.output.splitlines()
    # LC_CTYPE: Python's own locale coercion; PWD: bwrap's --chdir
    assert set(json.loads(names)) <= {"HOME", "TMPDIR", "LC_CTYPE", "PWD"}
    assert digest == "d41d8cd98f00b204e9800998ecf8427e"


def test_working_directory_is_thrown_away(isolation):
    first = run("import os\nopen('note.txt', 'w').write('x')\nprint(os.getcwd())", isolation)
    assert first.exit_code == 0
    second = run("import os\nprint(os.path.exists('note.txt'))", isolation)
    assert second.output == "False\n"
    assert not Path(first.output.strip(), "note.txt").exists()


def test_infinite_loop_is_stopped_at_the_wall_clock(isolation):
    result = run("while True:\n    pass", isolation, Limits(wall_s=1.5, cpu_s=30))
    assert result.timed_out and result.exit_code is None
    assert result.wall_s < 4
    assert_next_run_works(isolation)


def test_cpu_limit_kills_a_spinning_program(isolation):
    result = run("while True:\n    pass", isolation, Limits(wall_s=20, cpu_s=1))
    assert not result.timed_out and result.exit_code == -signal.SIGXCPU


def test_sleeping_program_is_stopped_at_the_wall_clock(isolation):
    result = run("import time\ntime.sleep(60)", isolation, Limits(wall_s=1))
    assert result.timed_out


@pytest.mark.skipif(not IS_ROOT, reason="RLIMIT_NPROC needs a uid of the sandbox's own")
def test_fork_bomb_is_contained_and_leaves_nothing(isolation):
    marker = new_marker()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run(marked(bomb, marker), isolation, Limits(wall_s=2, processes=16))
    assert result.timed_out
    assert survivors(marker) == []
    assert_next_run_works(isolation)


def test_memory_bomb_hits_the_address_space_limit(isolation):
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(50 << 20))", isolation)
    assert result.exit_code == 1 and result.output.rstrip().endswith("MemoryError")
    assert_next_run_works(isolation)


def test_big_file_hits_the_file_size_limit(isolation):
    result = run("open('big', 'w').write('x' * (32 << 20))", isolation, Limits(file_mb=4))
    assert result.exit_code == 1 and "File too large" in result.output


def test_cannot_write_outside_its_directory(isolation):
    target = REPO / f"escape-{uuid.uuid4().hex}"
    result = run(f"open({str(target)!r}, 'w').write('x')", isolation)
    assert result.exit_code == 1 and not target.exists()


@pytest.mark.skipif(not bwrap_works(), reason="bwrap missing or unusable here")
def test_bwrap_gives_a_private_tmp():
    target = Path("/tmp") / f"escape-{uuid.uuid4().hex}"
    result = run(f"open({str(target)!r}, 'w').write('x')\nprint('written')", "bwrap")
    assert result.output == "written\n" and not target.exists()


@pytest.mark.skipif(not IS_ROOT, reason="only root's sandboxes run as an unprivileged uid of their own")
def test_cannot_read_root_only_files(isolation):
    result = run("print(open('/etc/shadow').read())", isolation)
    assert result.exit_code == 1 and "root:" not in result.output


@pytest.mark.skipif(not bwrap_works(), reason="bwrap missing or unusable here")
def test_bwrap_hides_the_repository():
    result = run(f"print(open({str(REPO / 'pyproject.toml')!r}).read())", "bwrap")
    assert result.exit_code == 1 and "FileNotFoundError" in result.output
    assert "score-rl" not in result.output


@pytest.mark.skipif(not bwrap_works(), reason="bwrap missing or unusable here")
def test_bwrap_has_no_network():
    with socket.socket() as listener:  # a server on this machine's loopback the program tries to reach
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')", "bwrap")
        with pytest.raises(socket.timeout):
            listener.accept()
    assert result.exit_code == 1 and "connected" not in result.output


@pytest.mark.skipif(not IS_ROOT, reason="kill(-1) as the caller's own uid would kill the test run")
def test_killing_its_parent_and_everyone_else_does_nothing_outside(isolation):
    result = run("import os, signal\nfor pid in (os.getppid(), -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
                 "    except OSError as exc:\n        print(type(exc).__name__)", isolation)
    assert result.exit_code in (0, -signal.SIGKILL)  # kill(-1) may take the program itself down
    assert_next_run_works(isolation)


def test_detached_child_does_not_outlive_the_run(isolation):
    marker = new_marker()
    detach = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    result = run(marked(detach, marker), isolation)
    assert result.exit_code == 0 and "parent done" in result.output
    assert survivors(marker) == []
    assert_next_run_works(isolation)


def test_megabytes_of_output_are_capped_keeping_the_end(isolation):
    result = run("import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 100_000)\nprint()\nprint('THE END')", isolation)
    assert result.exit_code == 0
    assert len(result.output) < LIMITS.output_bytes + 4096
    assert "bytes of output cut" in result.output and result.output.endswith("THE END\n")


def test_os_exit_mid_run_is_reported(isolation):
    result = run("import os\nprint('before', flush=True)\nos._exit(7)\nprint('after')", isolation)
    assert (result.exit_code, result.output) == (7, "before\n")


def test_guard_names_what_it_blocked(isolation):
    result = run_python("import socket\nsocket.socket()", LIMITS, isolation, guard=True)
    assert result.violation == "socket.__new__"
    assert run_python("open('/tmp/x', 'w')", LIMITS, isolation, guard=True).violation == "open"
    assert run_python("open('inside.txt', 'w').write('ok')", LIMITS, isolation, guard=True).exit_code == 0


def test_auto_uses_bwrap_where_it_works():
    assert run_python("pass").isolation == ("bwrap" if bwrap_works() else "fallback")


@pytest.mark.skipif(not IS_ROOT, reason="runs have uids of their own only when the grader is root")
def test_a_live_runs_uid_is_never_handed_out_again():
    # Ending a run kills every process of its uid: a uid given to two live runs lets one kill the other.
    uids = RunUids()
    held = uids.acquire()
    for _ in range(3 * 256):  # many more runs than the process's block of uids, each opened and closed
        uid = uids.acquire()
        assert uid != held
        uids.release(uid)
    others = [uids.acquire() for _ in range(255)]
    assert held not in others and len(set(others)) == 255
    with pytest.raises(RuntimeError, match="more than 256 sandboxes open at once"):
        uids.acquire()
