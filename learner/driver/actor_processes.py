"""Ending a replaced actor's process for certain.

`ray.kill` asks the actor's worker process to exit; a worker that cannot run (stopped by SIGSTOP,
stuck in a call that holds the interpreter) may outlive its actor's death by a long while, holding
its memory (an accelerator's, for a vLLM engine) while its replacement starts beside it. So the
driver records each rollout actor's node and pid once it is built and, on replacing it, SIGKILLs
that pid on its node with a zero-CPU task pinned there: how Ray's own chaos tests kill a process
on a given node (ray._private.test_utils, ResourceKiller). The pid is killed only while it still
runs an actor of that class (Ray titles an actor's worker `ray::<Class>`), so a pid the kernel has
reused for something else is never hit. Linux only (reads /proc); elsewhere this does nothing.
"""
from __future__ import annotations

import os
import signal

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0, max_retries=0)
def _kill_if_titled(pid: int, title: str) -> bool:
    """SIGKILL `pid` if its process is titled `title`; False if it is gone (or a zombie) already."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            name = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    if not name.startswith(title):
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def end_processes(processes: list[tuple[str, int]], title: str, timeout_s: float = 30.0) -> None:
    """After `ray.kill` of their actors: SIGKILL each (node id, pid) still titled `title`, on its node,
    and wait for the kills (at most `timeout_s`: a node that died with its processes answers never)."""
    refs = [
        _kill_if_titled.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(pid, title)
        for node_id, pid in processes
    ]
    ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
