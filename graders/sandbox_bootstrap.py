"""First code to run inside a sandbox: set limits, install the guard, run the program from stdin.

graders/sandbox.py passes this file's text to `python -I -S -B -c` with the limits as arguments,
so it must use only the standard library and define nothing the program could rely on.

The guard is an audit hook (PEP 578) that ends the program at the first operation a graded
function never needs: starting processes, sending signals, the network, loading native code,
writing outside its directory. It names what was tried (status sandbox_violation) instead of
leaving it to fail obscurely; the walls that contain a program are the OS ones (rlimits,
namespaces, an unprivileged uid), and they hold without it.
"""
import ctypes
import os
import resource
import signal
import sys

VIOLATION_EXIT = 86
_PR_SET_PDEATHSIG = 1
_DENIED = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill",
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _set_limits(cpu_s: int, memory_bytes: int, file_bytes: int, processes: int) -> None:
    # The soft CPU limit sends SIGXCPU; the hard one, a second later, SIGKILL if that is ignored.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if processes > 0:  # 0: the sandbox runs as the caller's own uid, whose other processes count too
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def _writes_outside(args: tuple, home: str) -> bool:
    path, mode, flags = args
    if isinstance(path, int):  # an fd the program already holds
        return False
    writing = any(c in mode for c in "wxa+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
    if not writing:
        return False
    path = os.fsdecode(path)
    return not os.path.abspath(path).startswith(home + os.sep)


def _install_guard() -> None:
    home = os.getcwd()

    def guard(event: str, args: tuple) -> None:
        if event in _DENIED or (event == "open" and _writes_outside(args, home)):
            os.write(2, f"\nsandbox: blocked {event}\n".encode())
            os._exit(VIOLATION_EXIT)

    sys.addaudithook(guard)


def main() -> None:
    cpu_s, memory_bytes, file_bytes, processes, guarded = map(int, sys.argv[1:6])
    # If the grader is killed mid-run, nobody enforces the wall clock: die with it.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    _set_limits(cpu_s, memory_bytes, file_bytes, processes)
    source = sys.stdin.read()
    code = compile(source, "program.py", "exec")
    sys.argv = ["program.py"]
    if guarded:
        _install_guard()
    exec(code, {"__name__": "__main__"})


if __name__ == "__main__":
    main()
