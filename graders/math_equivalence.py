"""Are two final answers the same mathematical object? math-verify decides, in a server process.

The server (graders/math_verify_server.py) enforces the per-comparison deadline and memory cap;
this side only talks to it, restarts it if it dies, and turns its verdicts into Grades.
One server per judge, one request at a time (a lock), so a judge can be shared by threads.
"""
from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
from pathlib import Path

from protos import Grade

_SERVER = Path(__file__).parent / "math_verify_server.py"
_START_TIMEOUT_S = 120.0  # importing sympy on a busy 2-core machine
_REPLY_SLACK_S = 10.0  # beyond the server's own deadline: only a dead or wedged server takes this long


class MathJudge:
    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 2048):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None

    def compare(self, reference: str, answer: str) -> Grade:
        with self._lock:
            try:
                reply = self._ask({"reference": reference, "answer": answer})
            except (OSError, ValueError, TimeoutError) as exc:
                self._stop()  # the next comparison starts a fresh server
                return Grade(reward=0.0, status="error", detail=f"math-verify server: {exc}")
        return Grade(reward=float(reply["status"] == "pass"), status=reply["status"], detail=reply["detail"])

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ask(self, request: dict) -> dict:
        server = self._server or self._start()
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        return self._read_reply(server, self.timeout_s + _REPLY_SLACK_S)

    def _start(self) -> subprocess.Popen:
        server = subprocess.Popen(
            [sys.executable, "-I", str(_SERVER), str(self.timeout_s), str(self.memory_mb << 20)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self._server = server
        if self._read_reply(server, _START_TIMEOUT_S)["status"] != "ready":
            raise OSError("did not start")
        return server

    @staticmethod
    def _read_reply(server: subprocess.Popen, timeout_s: float) -> dict:
        if not select.select([server.stdout], [], [], timeout_s)[0]:
            raise TimeoutError(f"no reply within {timeout_s:g}s")
        line = server.stdout.readline()
        if not line:
            raise OSError(f"exited with code {server.wait()} (is math-verify installed in {sys.executable}?)")
        return json.loads(line)

    def _stop(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None

    # A task travels to Ray actors by pickle: the copy starts its own server when first used.
    def __getstate__(self) -> dict:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __del__(self):
        self._stop()
