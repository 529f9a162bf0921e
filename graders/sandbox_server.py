"""Inside a warm sandbox: fork a fresh, limited child per graded program and relay its answers.

graders/warm_sandbox.py starts this file's text once per sandbox (`python -I -S -B -c`, inside
bwrap) and then sends it programs, so a program costs a fork instead of a sandbox and an
interpreter start-up. Standard library only; the modules it needs (graders/sandbox_seccomp.py,
graders/plain_data.py, graders/sandbox_bootstrap.py) arrive as text in the first message.

Frames both ways are a 4-byte big-endian length and a body. After the first (JSON: the set-up),
the grader's requests are one byte and a body this server passes on to the child unread:
  b"S" + JSON {"source", "calls",                 start a program
               "exit_when_answered"}
  b"C" + JSON {"name", "args", "kwargs"}          call one of its functions (args, kwargs:
                                                  graders/plain_data.py encodings)
  b"E"                                            end it and report
  b"Q"                                            end it quietly (the grader needs nothing more)
  b"P", between programs                          say when the last one is ended: {"idle": true}
"calls" (or null) lists calls, {"name", "args", "kwargs"} each, to answer all at once once the
program has loaded: one reply {"results": [{"value"} or {"raised"}, ...]} instead of {"loaded"}.
With "exit_when_answered", a program that made every one of those calls (the last may have raised)
exits after that reply: it will be asked nothing more.
It reads back one frame per request: b"C" + the child's own reply, passed through unread and at
most `max_reply` bytes (its only words, which the grader decodes as untrusted plain data), or
b"S" + this server's JSON ({"exit": ...}, {"timeout": true}, {"too_big": n}, or at the end
{"end": exit status, "output": its head and tail, "oom": whether the memory cgroup's OOM killer
ended a process of the program}, for b"E" only). A program is always ended before the next starts.

Per program, as little as possible waits: two children are kept ready ahead of their programs,
each forked and set up while a program runs (its descriptors, rlimits, its part of the seccomp
filter); each then waits on its request pipe. A program that exits once answered is mostly gone
(its memory freed) by the time the grader has checked its answers and ends it. The server's own
part of the filter is loaded once, before the first fork.

What the child cannot touch: this process is not dumpable (no /proc/<pid>/mem or fd/ for the
same uid), the seccomp filters let it signal or ptrace no one but itself, and its only
descriptors are its request and reply pipes and its output file, which has no name. After every
program the child is killed, anything else left in the pid namespace too (looked for where the
pids cgroup counts more processes than bwrap, this server and the spare children), and the scratch
directories are emptied.
"""
import ctypes
import fcntl
import gc
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import types

_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4
_OUTPUT_KEEP = 2048
_SPARES = 2  # children set up ahead: one would still be setting up when the next program came
_REQ_FD, _REP_FD = 3, 4  # the child's two pipe ends
# A child that could not be limited exits with this before any program runs: no verdict. (A program
# can fake it, and gain only that: a grade that is no verdict is no reward either.)
SETUP_FAILED_EXIT, SETUP_FAILED_MARK = 70, "sandbox: child setup failed"


def read_frame(fd: int, limit: int, deadline: float | None = None):
    """The next frame's body; None at EOF; "timeout" past the deadline; ("too_big", n) past limit."""
    head = _read_exact(fd, 4, deadline)
    if head is None or head == "timeout":
        return head
    size = struct.unpack(">I", head)[0]
    if size > limit:
        return ("too_big", size)
    return _read_exact(fd, size, deadline)


def _read_exact(fd: int, n: int, deadline):
    data = bytearray()
    while len(data) < n:
        if deadline is not None:
            # Past the deadline, what is already there is still read: only waiting is over.
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return "timeout"
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def write_frame(fd: int, body: bytes) -> None:
    data = memoryview(struct.pack(">I", len(body)) + body)
    while data:
        data = data[os.write(fd, data):]


def main() -> None:
    libc = ctypes.CDLL(None)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the grader gone, nobody is listening
    libc.prctl(_PR_SET_DUMPABLE, 0)
    init = json.loads(read_frame(0, 1 << 24))
    modules = {}
    for name, text in init["modules"].items():
        modules[name] = types.ModuleType(name)
        exec(compile(text, name + ".py", "exec"), modules[name].__dict__)
    server = Server(init, modules)
    # What programs commonly import, imported once here: a forked child has it for nothing. Not
    # hashlib: its OpenSSL state makes every fork and exit dearer than the rare program that imports it.
    for name in ("typing", "math", "re", "collections", "itertools", "functools", "string"):
        __import__(name)
    # The rules that bind this server too, once: every child inherits them and loads only its own few.
    modules["sandbox_seccomp"].install(modules["sandbox_seccomp"].SERVER)
    # Every object so far to the permanent generation: a child's collections never walk (and so
    # never copy-on-write) the pages the server's objects live on (the gc.freeze docs' fork advice).
    gc.freeze()
    write_frame(1, b"S" + json.dumps({"ready": os.getpid()}).encode())
    while (request := read_frame(0, 1 << 24)) is not None:
        if request[:1] == b"S":
            server.start(request[1:])
        elif request == b"P":
            write_frame(1, b"S" + json.dumps({"idle": True}).encode())


class Server:
    def __init__(self, init: dict, modules: dict):
        self.home = init["home"]
        self.scratch = init["scratch"]
        self.max_reply = init["max_reply"]
        self.output_dir = init["output_dir"]  # where each child's unnamed output file lives
        self.pid_namespace = init["pid_namespace"]  # only there is every other process a program's
        self.modules = modules
        # Children set up ahead of their programs, (pid, request pipe, reply pipe, output) each: two,
        # so that each has a whole program's time to get ready.
        self.spares = []
        # The program memory cgroup's cgroup.procs, or None; moved above the fds a child sets up.
        self.cgroup_fd = init["cgroup_fd"] and _move_up(init["cgroup_fd"])
        self.pids_fd = init["pids_fd"]  # the sandbox's pids.current, or None
        self.oom_fd = init["oom_fd"]  # the program group's OOM kill count, or None
        self.pids_idle = None  # pids.current with no child at all: read at the first start
        # A child's set-up, prepared once here: a child only applies it.
        limits = init["limits"]  # wall_s, cpu_s, memory_bytes, file_bytes, processes, guard
        self.wall_s, self.guard, cpu = limits["wall_s"], limits["guard"], limits["cpu_s"]
        self.rlimits = [
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU, then SIGKILL
            (resource.RLIMIT_AS, (limits["memory_bytes"],) * 2),
            (resource.RLIMIT_FSIZE, (limits["file_bytes"],) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_NOFILE, (64, 64)),
            (resource.RLIMIT_MEMLOCK, (0, 0)),
        ] + ([(resource.RLIMIT_NPROC, (limits["processes"],) * 2)] if limits["processes"] > 0 else [])
        self.null = os.open("/dev/null", os.O_RDONLY)
        self.child_filter = modules["sandbox_seccomp"].ChildFilter()

    def start(self, start: bytes) -> None:
        """One program, from its start (its JSON {"source", "calls", ...}, passed on unread) to the
        grader's "end" (or this server's EOF)."""
        deadline = time.monotonic() + self.wall_s
        if self.pids_fd is not None and self.pids_idle is None:
            self.pids_idle = _read_count(self.pids_fd)  # bwrap and this server: nothing has forked yet
        pid, req_w, rep_r, out = self.spares.pop(0) if self.spares else self._fork()
        oom_kills = self._oom_kills()  # the last program's all counted: it is dead
        try:
            write_frame(req_w, start)
        except BrokenPipeError:
            pass  # its set-up failed; _relay sees EOF and says how
        # A child for a program to come, forked while this one runs (on the other core, where there
        # is one): a program's start waits for no fork, and neither does its end.
        try:
            while len(self.spares) < _SPARES:
                self.spares.append(self._fork())
        except OSError:
            pass  # no room (the pids cgroup full of this program's threads): forked at the next start
        alive = self._relay(pid, rep_r, deadline)
        while (request := read_frame(0, 1 << 24)) is not None:
            if request[:1] in (b"E", b"Q"):
                break
            if not alive:  # the grader asked again after an ending reply: tell it again
                write_frame(1, b"S" + json.dumps({"gone": True}).encode())
                continue
            try:
                write_frame(req_w, request[1:])
            except BrokenPipeError:
                pass  # it died; _relay sees EOF and says how
            alive = self._relay(pid, rep_r, deadline)
        status = self._finish(pid)
        os.close(req_w)
        os.close(rep_r)
        if request == b"E":
            oom = self._oom_kills() > oom_kills
            write_frame(1, b"S" + json.dumps({"end": status, "output": _output(out), "oom": oom}).encode())
        else:
            os.close(out)
        self._wipe()
        if request is None:
            sys.exit(0)

    def _fork(self) -> tuple[int, int, int, int]:
        """A child, limited and filtered, waiting on its request pipe for a program: (pid, request
        pipe, reply pipe, output file)."""
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        # Its stdout and stderr: a file with no name, so no program (its own or a later one) can
        # replace it or write into it by path, and emptying the scratch directories leaves it be.
        out = os.open(self.output_dir, os.O_TMPFILE | os.O_RDWR, 0o600)
        pid = os.fork()
        if pid == 0:
            self._child(req_r, rep_w, out)  # never returns
        os.close(req_r)
        os.close(rep_w)
        return pid, req_w, rep_r, out

    def _relay(self, pid: int, rep_r: int, deadline: float) -> bool:
        """Pass the child's next reply on; False when there will be no more (and say why)."""
        reply = read_frame(rep_r, self.max_reply, deadline)
        if isinstance(reply, bytes):
            write_frame(1, b"C" + reply)
            return True
        if reply == "timeout":
            message = {"timeout": True}
        elif reply is None:  # it closed its reply pipe: exiting, usually; wait that out to the deadline
            message = {"exit": _reap(pid, deadline)}
        else:
            message = {"too_big": reply[1]}
        _quiet(os.kill, pid, signal.SIGKILL)
        write_frame(1, b"S" + json.dumps(message).encode())
        return False

    def _finish(self, pid: int):
        _quiet(os.kill, pid, signal.SIGKILL)
        try:
            status = _describe(os.waitpid(pid, 0)[1])
        except ChildProcessError:  # already reaped by _relay
            status = None
        # The child cannot fork, but if anything else lives in this pid namespace beside bwrap's
        # init (pid 1), this server and the spare children, it is left over from a program: end it.
        # Where the sandbox's pids cgroup counts its processes, /proc is read only when it counts
        # more than those.
        keep = {1, os.getpid()} | {spare[0] for spare in self.spares}
        if self.pid_namespace and (self.pids_fd is None or _read_count(self.pids_fd) > self.pids_idle + len(self.spares)):
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) not in keep:
                    _quiet(os.kill, int(entry), signal.SIGKILL)
        return status

    def _wipe(self) -> None:
        for top in self.scratch:
            if not os.listdir(top):  # most programs write nothing: one look, not a walk
                continue
            for root, dirs, files in os.walk(top, topdown=False):
                for name in files + dirs:
                    path = os.path.join(root, name)
                    try:
                        if os.path.isdir(path) and not os.path.islink(path):
                            os.rmdir(path)
                        else:
                            os.unlink(path)
                    except OSError:
                        pass
            # A directory the program made unreadable or unwritable: open it up and go again.
            if os.listdir(top):
                for root, dirs, _ in os.walk(top):
                    for name in dirs:
                        try:
                            os.chmod(os.path.join(root, name), 0o700)
                        except OSError:
                            pass
                for root, dirs, files in os.walk(top, topdown=False):
                    for name in files:
                        _quiet(os.unlink, os.path.join(root, name))
                    for name in dirs:
                        _quiet(os.rmdir, os.path.join(root, name))

    def _oom_kills(self) -> int:
        """How many processes the OOM killer has ended in the program group (0 without one)."""
        for line in os.pread(self.oom_fd, 4096, 0).splitlines() if self.oom_fd is not None else ():
            key, _, value = line.partition(b" ")
            if key == b"oom_kill":
                return int(value)
        return 0

    def _child(self, req_r: int, rep_w: int, out: int) -> None:
        try:
            self._child_setup(req_r, rep_w, out)
            start = read_frame(_REQ_FD, 1 << 26)
            if start is None:  # the server is going away
                os._exit(0)
            # Only now, its program about to run, into the program memory cgroup (then let go of it):
            # a spare child waiting beside a running program is no candidate for that one's OOM kill.
            if self.cgroup_fd is not None:
                os.write(self.cgroup_fd, b"0")
                os.close(self.cgroup_fd)
            if self.guard:
                self.modules["sandbox_bootstrap"]._install_guard()
        except BaseException as exc:  # noqa: BLE001 - the program must not run unconfined
            _quiet(os.write, 2, f"{SETUP_FAILED_MARK}: {exc!r}\n".encode())
            os._exit(SETUP_FAILED_EXIT)
        start = json.loads(start)
        _serve(start["source"], start["calls"], start["exit_when_answered"], self.modules)

    def _child_setup(self, req_r: int, rep_w: int, out: int) -> None:
        os.setsid()
        # Out of the way first (a source may sit on another's target), then into place.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (self.null, out, out, req_r, rep_w)]
        for fd, target in zip(high, (0, 1, 2, _REQ_FD, _REP_FD)):
            os.dup2(fd, target, inheritable=target < 3)
        # All else (the grader's pipes, the last program's, the server's) but cgroup.procs, closed once used.
        keep = self.cgroup_fd if self.cgroup_fd is not None else 1 << 16
        os.closerange(_REP_FD + 1, keep)
        os.closerange(keep + 1, 1 << 16)
        for which, values in self.rlimits:
            resource.setrlimit(which, values)
        self.child_filter.install(os.getpid())  # on top of SERVER, inherited
        os.chdir(self.home)
        sys.argv = ["program.py"]


def _serve(source: str, calls: list | None, exit_when_answered: bool, modules: dict) -> None:
    """The program's side: run it, then answer calls to its functions with plain data."""
    plain = modules["plain_data"]
    # Bound before the program runs, which may replace any of them where they came from.
    write, dumps, loads, flush, exit_ = os.write, json.dumps, json.loads, _flush, os._exit

    def reply(message: dict) -> None:
        flush()
        try:
            body = dumps(message, separators=(",", ":")).encode()
        except BaseException as exc:  # noqa: BLE001
            body = dumps({"raised": f"{type(exc).__name__}: {exc}"[:500]}).encode()
        data = memoryview(struct.pack(">I", len(body)) + body)
        while data:
            data = data[write(_REP_FD, data):]

    namespace = {"__name__": "__main__"}

    def answer(call: dict) -> dict:
        try:
            function = namespace[call["name"]]
            value = function(*plain.decode(call["args"]), **plain.decode(call["kwargs"]))
            return {"value": plain.encode(value)}
        except BaseException as exc:  # noqa: BLE001
            return {"raised": _exception(exc)}

    try:
        exec(compile(source, "program.py", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and all: the program's failure
        reply({"raised": _exception(exc)})
        exit_(0)
    # Calls known in advance are answered together, in one reply: one round trip per program. Up to
    # the first exception, as a test would stop there.
    if calls is None:
        reply({"loaded": True})
    else:
        results = []
        for call in calls:
            results.append(answer(call))
            if "raised" in results[-1]:
                break
        reply({"results": results})
        if exit_when_answered and len(results) == len(calls):
            # All the grader asked for: exit now, so that this process's end (the kernel freeing its
            # memory: the larger part of a fork's cost) overlaps the grader's check, not the next
            # program's start. A program that stops this only makes its end the server's kill.
            exit_(0)
    while (request := read_frame(_REQ_FD, 1 << 24)) is not None:
        reply(answer(loads(request)))
    exit_(0)


def _output(fd: int) -> str:
    """The head and tail of a child's output file, which is then closed."""
    try:
        size = os.fstat(fd).st_size
        if size <= 2 * _OUTPUT_KEEP:
            data = os.pread(fd, size, 0)
        else:
            cut = f"\n[... {size - 2 * _OUTPUT_KEEP} bytes of output cut ...]\n".encode()
            data = os.pread(fd, _OUTPUT_KEEP, 0) + cut + os.pread(fd, _OUTPUT_KEEP, size - _OUTPUT_KEEP)
        return data.decode(errors="replace")
    finally:
        os.close(fd)


def _move_up(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def _read_count(fd: int) -> int:
    return int(os.pread(fd, 32, 0))


def _exception(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:500]
    except BaseException:  # noqa: BLE001 - a __str__ that raises
        return "an exception that cannot be shown"


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass


def _reap(pid: int, deadline: float):
    """Its exit status once it has exited, waited for on a pidfd; None if it still runs at the
    deadline (then the caller kills it)."""
    pidfd = os.pidfd_open(pid)
    try:
        if select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return _describe(os.waitpid(pid, 0)[1])
        return None
    finally:
        os.close(pidfd)


def _describe(status: int):
    """An exit code, or -N for death by signal N (Popen's convention)."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass


if __name__ == "__main__":
    main()
