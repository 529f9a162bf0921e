"""Seccomp filters for graded programs: the kernel refuses what no graded function needs.

Two filters, stacked (a process's filters all run on each syscall and the strictest answer wins):
- SERVER, installed once by graders/sandbox_server.py in itself before its first program: the
  rules that hold for the server as well as for every program, which inherit it across fork;
- the child filter, installed by each forked program child after its limits and before the
  program's first line: the few rules the server itself must not be bound by (it forks, kills
  and waits for its children), for the child's own pid. A short filter is quick for every child
  to load, and a ChildFilter made in the server before it forks has it ready to load.
Standard library only: this file's text runs inside the sandbox.

The filters are classic BPF assembled here by hand (seccomp(2), "Filter programs"; the layout of
struct seccomp_data and the return values are from <linux/seccomp.h>; syscall numbers from the
x86_64 table). On any other architecture they refuse to install: the sandbox then fails closed.

Denied, the call returning EPERM (ENOSYS for clone3, so glibc falls back to clone for threads):
- new processes and programs: fork, vfork, execve, execveat (SERVER); clone without CLONE_THREAD
  (child). Threads stay (the pids cgroup bounds them where there is one);
- memory no limit would count: memfd_create, memfd_secret, SysV and POSIX message-queue IPC
  (a SysV segment outlives its process);
- reaching other processes: ptrace, process_vm_readv/writev, kcmp, pidfd_send_signal, tkill
  (SERVER); pidfd_open, and kill, tgkill, rt_(tg)sigqueueinfo and prlimit64 aimed at any
  process but the program itself (child);
- the network (socket, socketpair), namespaces and mounts, keys, bpf, perf, userfaultfd, io_uring,
  personality, device nodes, file handles, scheduling and memory placement of other processes.
"""
import ctypes
import errno
import platform
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_CLONE_THREAD = 0x00010000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # args[0]'s low 32 bits on little-endian x86_64
# Classic BPF opcodes (linux/bpf_common.h)
_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K

DENIED = {  # x86_64 syscall numbers; in SERVER
    "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
    "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "semget": 64, "msgget": 68, "mq_open": 240,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_send_signal": 424, "tkill": 200,
    "socket": 41, "socketpair": 53,
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "personality": 135, "mknod": 133, "mknodat": 259, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "setpriority": 141, "sched_setscheduler": 144, "sched_setattr": 314, "ioprio_set": 251,
    "migrate_pages": 256, "move_pages": 279,
}
_CLONE, _CLONE3, _PIDFD_OPEN = 56, 435, 434
# In the child filter. Allowed only when the first argument names the program itself (its pid) or, for
# kill and prlimit64, 0 (its own process group; itself).
_SELF_ONLY = {"kill": (62, True), "tgkill": (234, False), "rt_sigqueueinfo": (129, False),
              "rt_tgsigqueueinfo": (297, False), "prlimit64": (302, True)}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)  # struct sock_filter


def _assemble_server() -> bytes:
    ops = [
        _op(_LD_ABS, _ARCH),
        _op(_JEQ, _AUDIT_ARCH_X86_64, 1, 0),
        _op(_RET, _RET_KILL_PROCESS),
        _op(_LD_ABS, _NR),
        _op(_JGE, _X32_SYSCALL_BIT, 0, 1),  # the x32 ABI: another syscall table, not checked here
        _op(_RET, _RET_KILL_PROCESS),
    ]
    for nr in DENIED.values():
        ops += [_op(_JEQ, nr, 0, 1), _op(_RET, _RET_ERRNO | errno.EPERM)]
    ops += [_op(_JEQ, _CLONE3, 0, 1), _op(_RET, _RET_ERRNO | errno.ENOSYS)]
    ops.append(_op(_RET, _RET_ALLOW))
    return b"".join(ops)


def _assemble_child() -> tuple[bytes, list[int]]:
    """The child's filter with 0 for the program's pid, and the byte offsets of those k fields. It
    checks no architecture: SERVER, under it, kills any call of another one first."""
    ops, pid_ops = [_op(_LD_ABS, _NR), _op(_JEQ, _PIDFD_OPEN, 0, 1), _op(_RET, _RET_ERRNO | errno.EPERM)], []
    # clone: threads only. The block returns on every path, so the accumulator (now args[0]) never
    # reaches the checks after it; its first jump skips it whole with the syscall number kept.
    ops += [_op(_JEQ, _CLONE, 0, 4), _op(_LD_ABS, _ARG0_LOW), _op(_JSET, _CLONE_THREAD, 1, 0),
            _op(_RET, _RET_ERRNO | errno.EPERM), _op(_RET, _RET_ALLOW)]
    for nr, zero_too in _SELF_ONLY.values():
        k = 2 if zero_too else 1
        ops.append(_op(_JEQ, nr, 0, k + 3))
        ops.append(_op(_LD_ABS, _ARG0_LOW))
        pid_ops.append(len(ops))
        ops.append(_op(_JEQ, 0, k, 0))  # the program's pid, filled in by ChildFilter.install
        if zero_too:
            ops.append(_op(_JEQ, 0, 1, 0))  # 0: its own process group
        ops += [_op(_RET, _RET_ERRNO | errno.EPERM), _op(_RET, _RET_ALLOW)]
    ops.append(_op(_RET, _RET_ALLOW))
    return b"".join(ops), [8 * i + 4 for i in pid_ops]  # k: after u16 code, u8 jt, u8 jf


# Built once, in the server before it forks; a child only writes its pid in.
SERVER = _assemble_server()
_CHILD_TEMPLATE, _PID_OFFSETS = _assemble_child()


class _SockFprog(ctypes.Structure):  # struct sock_fprog
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# Loaded once, in the server, before it forks: a millisecond a program otherwise.
_libc = ctypes.CDLL(None, use_errno=True)


_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


class _Loadable:
    """A filter's code in memory the kernel can read, as a struct sock_fprog."""

    def __init__(self, code: bytes):
        if platform.machine() != "x86_64":
            raise OSError(f"no seccomp filter for {platform.machine()}: refusing to run programs unfiltered")
        self.code = ctypes.create_string_buffer(code, len(code))
        self.fprog = ctypes.byref(_SockFprog(len(code) // 8, ctypes.addressof(self.code)))

    def load(self) -> None:
        """Bind the calling thread (of a single-threaded process) and all it starts, irrevocably.
        Needs no_new_privs, which `install` sets and every child inherits."""
        if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, self.fprog, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def install(code: bytes) -> None:
    """Bind the calling thread (of a single-threaded process) and all it starts to the filter `code`
    (SERVER), irrevocably."""
    loadable = _Loadable(code)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    loadable.load()


class ChildFilter(_Loadable):
    """The child filter, made in the server before it forks, so that a child only writes its pid in
    and loads it: ctypes objects made after a fork cost copy-on-write page faults (60 and 0.25 ms of
    CPU a child in a bare fork, about 25 a program in the server, whose children touch some of those
    pages anyway). Loaded on top of SERVER, which set no_new_privs."""

    def __init__(self):
        super().__init__(_CHILD_TEMPLATE)

    def install(self, own_pid: int) -> None:
        """Bind the calling child, whose pid (as it sees it) is own_pid."""
        pid = struct.pack("=I", own_pid)
        for offset in _PID_OFFSETS:
            self.code[offset:offset + 4] = pid
        self.load()
