"""The embedded run registry server: a local `redis-server` keeping its data in one directory
(`<output_dir>/.redis`), so the registry outlives the runs that wrote it.

Several processes may use one directory at once (two runs sharing an output_dir, `learner.runs`
during a run). The first starts the server and records its PID and port in `server.json`; every
user holds a shared lock on `users.lock`; whoever leaves last stops the server by its PID (SIGTERM:
Redis flushes its append-only file and exits). `learner.runs` after the runs ended simply starts
it again on the same data. The server runs in its own session, so a run killed with Ctrl-C does not
take a server down that another run still uses; a server left behind by a killed run is found and
reused, and stopped by its last user, like any other.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from common.ports import free_port


class RedisUnavailable(RuntimeError):
    """No Redis to hold the run registry; the message says which and what to do."""


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, start_timeout_s: float = 15.0):
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout_s = start_timeout_s
        self._users = None  # the open file carrying our shared lock while we use the server
        self.url: str | None = None

    def start(self) -> str:
        """The URL of the server for this directory, started if none runs. Idempotent."""
        if self.url:
            return self.url
        if shutil.which("redis-server") is None:
            raise RedisUnavailable(
                "redis-server is not on PATH: install it (apt-get install redis-server; scripts/setup.sh does) "
                "or point cluster.redis_url at a running Redis"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked("start.lock", fcntl.LOCK_EX):
            port = self._running_port() or self._spawn()
            self._users = open(self.data_dir / "users.lock", "a")
            fcntl.flock(self._users, fcntl.LOCK_SH)
        self.url = f"redis://127.0.0.1:{port}/0"
        return self.url

    def stop(self) -> None:
        """Leave; stop the server if no other process uses it."""
        if self._users is None:
            return
        with self._locked("start.lock", fcntl.LOCK_EX):
            self._users.close()  # drops our shared lock
            self._users = None
            self.url = None
            with open(self.data_dir / "users.lock", "a") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # someone else still uses it; they stop it
                info = self._info()
                if info:
                    _terminate(info["pid"])
                (self.data_dir / "server.json").unlink(missing_ok=True)

    def __enter__(self) -> "EmbeddedRedis":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _locked(self, name: str, mode: int):
        lock = open(self.data_dir / name, "a")
        fcntl.flock(lock, mode)
        return lock  # a file is a context manager: leaving the block closes it, which unlocks

    def _info(self) -> dict | None:
        try:
            info = json.loads((self.data_dir / "server.json").read_text())
        except (OSError, ValueError):
            return None
        return info if _is_redis(info.get("pid", -1)) else None

    def _running_port(self) -> int | None:
        info = self._info()
        if info and _answers(info["port"]):
            return info["port"]
        return None

    def _spawn(self) -> int:
        log = self.data_dir / "redis.log"
        for _ in range(3):  # another process may take the free port between our probe and Redis's bind
            port = free_port()
            proc = subprocess.Popen(
                [
                    "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                    "--appendonly", "yes", "--save", "", "--logfile", str(log), "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + self.start_timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(port):
                    (self.data_dir / "server.json").write_text(json.dumps({"pid": proc.pid, "port": port}))
                    return port
                time.sleep(0.05)
            if proc.poll() is None:
                _terminate(proc.pid)
        tail = log.read_text()[-1500:] if log.exists() else ""
        raise RedisUnavailable(f"redis-server did not start on {self.data_dir} (log {log}):\n{tail}")


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _is_redis(pid: int) -> bool:
    """True if `pid` is a live redis-server: a recorded PID may have been reused since."""
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _terminate(pid: int, timeout_s: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        if not _is_redis(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
