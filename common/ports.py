"""Free TCP ports, for rendezvous addresses (torch.distributed, the weight-broadcast group, an
embedded redis-server, a test's Ray head).

A port found free can be taken by another process before its user binds it; callers that start a
server retry on that (learner/tracking/redis_server.py), and a rendezvous fails loudly within its timeout.
"""
from __future__ import annotations

import socket


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports free on `host` now (held open together, so they cannot repeat)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
