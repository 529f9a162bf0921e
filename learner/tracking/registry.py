"""The run registry in Redis: one hash per run (config and its hash, status, stage, step, policy
version, last checkpoint, a metrics summary) and a sorted set of run ids by start time.

Training never waits on Redis. A RunEntry keeps its run's whole state in memory and writes all of it
on each change, so a failed write (Redis restarting, the network gone) is repeated, with back-off,
by the next change, and a Redis that came back empty gets the complete state again. The final state
is waited for, up to a deadline; the run directory holds everything regardless.

Liveness: while a run is running, a daemon thread of its RunEntry refreshes `score:run:<id>:alive`
every 10 s with a 30 s expiry. A process that dies without a final status (kill -9, a lost machine)
leaves its hash saying `running`; readers (list_runs, get_run) report such a run, whose alive key has
expired, as `lost`, and its `updated` field says when it last wrote. The final status deletes the
key in the same transaction. Hashes from before heartbeats that still say `running` read as `lost`.

Attempts: a resumed run re-opens its run id with attempt 2, 3, ...: status `running` again, with
`attempt` and a `resumed` time; `started` and its place in the index stay those of the first
attempt. Hashes from before attempts were counted read as attempt 1.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Callable

import redis

from learner.tracking.redis_server import EmbeddedRedis, RedisUnavailable
from protos import RunConfig, dump_config

INDEX = "score:runs"
TRAIN_SUMMARY = ("reward_t1", "reward_t2", "kl_t1", "kl_t2", "step_s")
EVAL_SUMMARY = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i", "same_answer")
LOST = "lost"  # a reader's status, never written: running, but its alive key expired


def run_key(run_id: str) -> str:
    return f"score:run:{run_id}"


def alive_key(run_id: str) -> str:
    return f"score:run:{run_id}:alive"


def embedded_dir(output_dir: str | Path) -> Path:
    """Where the embedded server keeps the registry of runs under `output_dir`."""
    return Path(output_dir) / ".redis"


def connect(url: str, timeout_s: float = 5.0) -> redis.Redis:
    """A client for `url` that has answered a PING; RedisUnavailable naming the URL otherwise."""
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise RedisUnavailable(
            f"the run registry's Redis at {url!r} does not answer ({type(exc).__name__}: {exc}). Start Redis "
            "there, fix cluster.redis_url, or unset it to use a local redis-server"
        ) from None
    return client


class RunRegistry:
    """The registry a run writes to: the configured Redis, or the embedded server under output_dir."""

    def __init__(self, cfg: RunConfig):
        self.entries: list[RunEntry] = []
        self.server = None if cfg.cluster.redis_url else EmbeddedRedis(embedded_dir(cfg.output_dir))
        self.url = cfg.cluster.redis_url or self.server.start()
        try:
            self.client = connect(self.url)
        except RedisUnavailable:
            self.close()
            raise

    def open_run(self, run_id: str, cfg: RunConfig, run_dir: Path, log: Callable[[str], None],
                 attempt: int = 1, base: dict[str, str] | None = None) -> "RunEntry":
        """The run's entry; attempt > 1 re-opens a run id for a resumed run. `base`: the base model's
        directory and content hash (base_model, base_sha256)."""
        entry = RunEntry(self.client, self.url, run_id, cfg, run_dir, log, attempt=attempt, base=base)
        self.entries.append(entry)
        return entry

    def close(self) -> None:
        for entry in self.entries:  # no heartbeat outlives the registry (already stopped if the run ended)
            entry.close()
        if self.server is not None:
            self.server.stop()


class RunEntry:
    """One run's record. Every method returns at once; writes that fail are retried later.

    While the run is running, a daemon thread refreshes its alive key every `heartbeat_s`; the key
    expires `alive_ttl_s` after the last refresh, so a dead process's run reads as lost by then.
    """

    def __init__(self, client: redis.Redis, url: str, run_id: str, cfg: RunConfig, run_dir: Path,
                 log: Callable[[str], None], max_backoff_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 attempt: int = 1, heartbeat_s: float = 10.0, alive_ttl_s: float = 30.0,
                 base: dict[str, str] | None = None):
        self.client, self.url, self.log, self.clock = client, url, log, clock
        self.max_backoff_s, self.heartbeat_s = max_backoff_s, heartbeat_s
        self.alive_ttl_ms = int(alive_ttl_s * 1000)
        config = dump_config(cfg)
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        self.state: dict[str, str | int] = {
            "run_id": run_id, "name": cfg.name, "status": "running", "attempt": attempt, "stage": "", "step": 0,
            "policy_version": 0, "checkpoint": "", "run_dir": str(Path(run_dir).resolve()),
            "config": config, "config_hash": hashlib.sha256(config.encode()).hexdigest()[:16],
            "updated": "", "error": "", "base_model": "", "base_sha256": "", **(base or {}),
        }
        if attempt > 1:
            self.state["resumed"] = now
        # Written only where the hash or the index lacks them: a resumed run keeps its first attempt's.
        self.started, self.started_at = now, time.time()
        self.metrics: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()  # the outage bookkeeping below, shared with the heartbeat thread
        self._failed_since: float | None = None
        self._backoff_s = 0.0
        self._next_try = 0.0
        self._write()
        self._closed = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"registry-heartbeat-{run_id}", daemon=True)
        self._heartbeat.start()

    def record(self, record: dict) -> None:
        """Take a metrics record (the run directory's metrics.jsonl line) into the summary."""
        kind = record.get("kind")
        keys = TRAIN_SUMMARY if kind == "train" else EVAL_SUMMARY if kind == "eval" else ()
        if not keys:
            return
        self.metrics[kind] = {k: record[k] for k in keys if k in record}
        self.state["step"] = record.get("step", self.state["step"])
        self.state["policy_version"] = record.get("policy_version", self.state["policy_version"])
        if kind == "train":
            self.state["stage"] = record["stage"]
        self._write()

    def finish(self, checkpoint: str, wait_s: float = 30.0) -> bool:
        self.close()
        self.state.update(status="finished", checkpoint=checkpoint)
        return self._write_final(wait_s)

    def fail(self, reason: str, wait_s: float = 30.0) -> bool:
        self.close()
        self.state.update(status="failed", error=reason.strip().splitlines()[0][:500] if reason.strip() else "")
        return self._write_final(wait_s)

    def close(self) -> None:
        """Stop the heartbeat and write nothing: the run reads as lost once its alive key expires, as
        if its process had died. finish() and fail() call it first. Idempotent."""
        self._closed.set()
        self._heartbeat.join()  # at most one Redis call away (bounded by the client's socket timeout)

    def _beat(self) -> None:
        """The heartbeat thread: refresh the alive key until close()."""
        while not self._closed.wait(self.heartbeat_s):
            try:
                self.client.set(alive_key(str(self.state["run_id"])), 1, px=self.alive_ttl_ms)
            except redis.RedisError as exc:
                self._redis_failed(exc)  # the next beat tries again, whatever the state writes' back-off
                continue
            with self._lock:
                self._next_try = 0.0  # Redis answers: the next change writes the state without waiting out a back-off

    def _write(self) -> bool:
        """Write the whole state now unless a recent failure's back-off has not run out. True if written."""
        if self.clock() < self._next_try:
            return False
        self.state["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        fields = {**self.state, "metrics": json.dumps(self.metrics)}
        run_id = str(self.state["run_id"])
        try:
            with self.client.pipeline() as pipe:  # MULTI/EXEC: a reader never sees half a state
                pipe.hset(run_key(run_id), mapping=fields)
                pipe.hsetnx(run_key(run_id), "started", self.started)
                pipe.zadd(INDEX, {run_id: self.started_at}, nx=True)
                if self.state["status"] == "running":  # alive from the first write on, not from the first beat
                    pipe.set(alive_key(run_id), 1, px=self.alive_ttl_ms)
                else:
                    pipe.delete(alive_key(run_id))
                pipe.execute()
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return False
        with self._lock:
            if self._failed_since is not None:
                self.log(f"registry: Redis at {self.url} answers again after {self.clock() - self._failed_since:.0f}s; "
                         "run state written")
            self._failed_since, self._backoff_s, self._next_try = None, 0.0, 0.0
        return True

    def _redis_failed(self, exc: redis.RedisError) -> None:
        """A write (the state's or the heartbeat's) failed: log the outage once, and back off the state writes."""
        with self._lock:
            if self._failed_since is None:
                self._failed_since = self.clock()
                self.log(f"registry: Redis at {self.url} failed ({type(exc).__name__}: {exc}); training goes on, "
                         "and the run's state is written when it answers again")
            self._backoff_s = min(max(2 * self._backoff_s, 0.5), self.max_backoff_s)
            self._next_try = self.clock() + self._backoff_s

    def _write_final(self, wait_s: float) -> bool:
        deadline = self.clock() + wait_s
        self._next_try = 0.0
        while not self._write():
            if self.clock() >= deadline:
                self.log(f"registry: the final state of {self.state['run_id']} could not be written to {self.url} "
                         f"within {wait_s:g}s; the run directory {self.state['run_dir']} has everything")
                return False
            time.sleep(max(0.0, min(self._next_try, deadline) - self.clock()))
            self._next_try = min(self._next_try, deadline)
        return True


def list_runs(client: redis.Redis) -> list[dict]:
    """Every registered run, newest first."""
    ids = client.zrevrange(INDEX, 0, -1)
    with client.pipeline() as pipe:  # MULTI: each hash and its alive key as of one moment
        for run_id in ids:
            pipe.hgetall(run_key(run_id))
            pipe.exists(alive_key(run_id))
        replies = pipe.execute()
    return [_decode(row, alive) for row, alive in zip(replies[::2], replies[1::2]) if row]


def get_run(client: redis.Redis, run_id: str) -> dict | None:
    with client.pipeline() as pipe:
        row, alive = pipe.hgetall(run_key(run_id)).exists(alive_key(run_id)).execute()
    return _decode(row, alive) if row else None


def _decode(row: dict[str, str], alive: bool) -> dict:
    out: dict = dict(row)
    for key in ("step", "policy_version"):
        out[key] = int(row.get(key) or 0)
    out["attempt"] = int(row.get("attempt") or 1)
    if out.get("status") == "running" and not alive:
        out["status"] = LOST
    out["metrics"] = json.loads(row.get("metrics") or "{}")
    return out
