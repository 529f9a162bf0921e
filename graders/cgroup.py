"""A memory and pids cgroup around one warm sandbox, where this machine lets the grader make one.

The kernel charges a cgroup for everything its processes hold: heap, tmpfs and /dev/shm files,
page tables, kernel memory; over its limit the OOM killer ends a process in it. pids.max bounds
processes and threads together. (Documentation/admin-guide/cgroup-v1/memory.rst and pids.rst;
cgroup-v2.rst for the unified hierarchy.)

Two levels, so that a program can never starve the sandbox's server:
  sandbox group   memory_mb + _SERVER_MB, pids.max   bwrap and the server
  program group   memory_mb                          each program child, which joins it itself
A program that fills tmpfs is OOM-killed in its own group; the files stay charged there until
the server deletes them, which it can, having its own room. The child joins by writing "0" to
an fd of the program group's cgroup.procs that the grader opened (as root) and handed to the
server; the child closes it before the program's first line, and the server is not dumpable, so
the program can reach neither the fd nor the file (which is not mounted in the sandbox).

Tried in order: cgroup v2 with memory and pids delegated to the grader's own cgroup, then cgroup
v1 hierarchies writable by the grader (root). `create` returns None where neither works; the
caller then says so in every grade it gives rather than running without a word.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")
SERVER_MB = 64  # the sandbox group's room for bwrap and the server beside the program's memory_mb
_counter = itertools.count()


class SandboxCgroup:
    def __init__(self, version: int, made: list[Path], sandbox: list[Path], program: Path):
        self.version = version
        self.made = made  # every directory created, parents first
        self.sandbox = sandbox  # where the sandbox's processes go (one per v1 hierarchy)
        self.program = program  # the program group (memory)

    @classmethod
    def create(cls, memory_mb: int, pids: int) -> SandboxCgroup | None:
        name = f"score-sandbox-{os.getpid()}-{next(_counter)}"
        for make in (cls._v2, cls._v1):
            made: list[Path] = []
            try:
                group = make(name, memory_mb << 20, pids, made)
            except OSError:
                _remove(made)
                continue
            if group is not None:
                return group
        return None

    @classmethod
    def _v2(cls, name: str, memory: int, pids: int, made: list) -> SandboxCgroup | None:
        if not (_ROOT / "cgroup.controllers").exists():
            return None
        own = open("/proc/self/cgroup").read().split("0::", 1)[1].split("\n", 1)[0].lstrip("/")
        parent = _ROOT / own
        if not {"memory", "pids"} <= set((parent / "cgroup.subtree_control").read_text().split()):
            return None
        _remove_stale(parent)
        group = _mkdir(parent / name, made)
        (group / "memory.max").write_text(str(memory + (SERVER_MB << 20)))
        (group / "memory.swap.max").write_text("0")
        (group / "pids.max").write_text(str(pids))
        (group / "cgroup.subtree_control").write_text("+memory +pids")  # no processes in group itself
        server, program = _mkdir(group / "server", made), _mkdir(group / "program", made)
        (program / "memory.max").write_text(str(memory))
        (program / "memory.swap.max").write_text("0")
        return cls(2, made, [server], program)

    @classmethod
    def _v1(cls, name: str, memory: int, pids: int, made: list) -> SandboxCgroup | None:
        memory_root, pids_root = _ROOT / "memory", _ROOT / "pids"
        if not (memory_root / "memory.limit_in_bytes").exists() or not (pids_root / "cgroup.procs").exists():
            return None
        _remove_stale(memory_root)
        _remove_stale(pids_root)
        group, pids_group = _mkdir(memory_root / name, made), _mkdir(pids_root / name, made)
        _set_v1_memory(group, memory + (SERVER_MB << 20))
        (pids_group / "pids.max").write_text(str(pids))
        program = _mkdir(group / "program", made)
        _set_v1_memory(program, memory)
        return cls(1, made, [group, pids_group], program)

    def add(self, pid: int) -> None:
        for group in self.sandbox:
            (group / "cgroup.procs").write_text(str(pid))

    def server_fds(self) -> dict[str, int]:
        """Descriptors for the sandbox's server, which sees no cgroup file system; the caller closes
        them once it has passed them on.
          cgroup_fd  the program group's cgroup.procs: a process that writes "0" to it joins;
          pids_fd    the sandbox's pids.current (its processes and threads, programs' included);
          oom_fd     the program group's memory.events (v2) or memory.oom_control (v1), whose
                     "oom_kill N" line counts the processes the kernel's OOM killer has ended.
        """
        pids = self.made[0] if self.version == 2 else self.sandbox[-1]
        oom = "memory.events" if self.version == 2 else "memory.oom_control"
        return {"cgroup_fd": os.open(self.program / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC),
                "pids_fd": os.open(pids / "pids.current", os.O_RDONLY | os.O_CLOEXEC),
                "oom_fd": os.open(self.program / oom, os.O_RDONLY | os.O_CLOEXEC)}

    def memory_bytes(self) -> int:
        """Memory charged to the sandbox and its programs."""
        if self.version == 2:
            return int((self.made[0] / "memory.current").read_text())
        return int((self.made[0] / "memory.usage_in_bytes").read_text())

    def processes(self) -> list[int]:
        """Every process (not thread) in the sandbox and its programs, sorted."""
        groups = [self.sandbox[-1], self.program] if self.version == 2 else [self.sandbox[-1]]
        return sorted(int(p) for g in groups for p in (g / "cgroup.procs").read_text().split())

    def remove(self) -> None:
        """After every process in it has exited (the kernel refuses to remove a busy group)."""
        _remove(self.made)

    def describe(self) -> str:
        return f"cgroup v{self.version} {self.made[0].name}"


def _mkdir(path: Path, made: list) -> Path:
    path.mkdir()
    made.append(path)
    return path


def _set_v1_memory(group: Path, limit: int) -> None:
    (group / "memory.limit_in_bytes").write_text(str(limit))
    swap_limit = group / "memory.memsw.limit_in_bytes"  # present only with swap accounting
    if swap_limit.exists():
        swap_limit.write_text(str(limit))


def _remove_stale(parent: Path) -> None:
    """Groups of graders that died without removing them (a Ray actor killed, say): empty once their
    processes are gone, so removable; a live grader's are left alone."""
    for group in parent.glob("score-sandbox-*"):
        pid = int(group.name.split("-")[2])
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            _remove([group] + [child for child in group.iterdir() if child.is_dir()])  # children first


def _remove(made: list[Path]) -> None:
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            pass
