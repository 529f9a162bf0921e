"""Before the first step: connecting to Ray (or starting a local one), sizing the actor groups, and
opening the run registry. Each failure is a StartupError that names what is wrong and what to do."""
from __future__ import annotations

import os
import socket
import time

import ray

from learner.driver.placement import local_resources, missing_resources, resolve_counts
from learner.tracking.redis_server import RedisUnavailable
from learner.tracking.registry import RunRegistry
from protos import RunConfig


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class StartupError(RuntimeError):
    """Something outside the config stops the run before training: named, with what to do."""


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes: ray.init retries an unreachable GCS for a long time."""
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise StartupError(
            f"the Ray cluster address {address!r} does not answer ({exc}). Start a head node "
            "(`ray start --head`), or fix cluster.ray_address / RAY_ADDRESS (host:port of the head's GCS)."
        ) from None


def check_port_free(port: int) -> None:
    """On a busy metrics port, ray.init fails after ~30 s with "the current node timed out during
    startup" (Ray 2.60, measured); name the port instead, before starting anything."""
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError as exc:
            raise StartupError(
                f"cluster.metrics_export_port={port} is not free ({exc}); pick another or leave it unset"
            ) from None


def connect_ray(cfg: RunConfig) -> bool:
    """Attach to the configured or ambient cluster, else start a local one. True if we started it."""
    address = cfg.cluster.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=True)
        except Exception as exc:  # Ray raises several types for an unreachable or refusing cluster
            raise StartupError(
                f"cannot connect to the Ray cluster at {address!r} ({type(exc).__name__}: {exc}). "
                "Check that the head node is running (`ray status`), that the address is right, and, "
                "with token authentication, that RAY_AUTH_TOKEN or the token file is available."
            ) from None
        return False
    c = cfg.cluster
    resources = local_resources(c)  # one machine plays every node group; refuses `auto` counts
    wanted = c.rollout_actors * c.rollout_cpus + c.grader_actors * c.grader_cpus + c.learner_workers * c.learner_cpus
    # Locally, stages run one after another, so actors may share cores: offer enough logical CPUs.
    if c.metrics_export_port:
        check_port_free(c.metrics_export_port)
    ray.init(
        num_cpus=max(os.cpu_count() or 1, int(wanted + 0.999)), resources=resources,
        include_dashboard=False, log_to_driver=True,
        _metrics_export_port=c.metrics_export_port,  # ray.init's only way to fix it (`ray start` has a flag)
    )
    return True


def size_cluster(cfg: RunConfig) -> RunConfig:
    """Turn `auto` counts into numbers from the live nodes, and warn about groups no node can host yet."""
    cluster = resolve_counts(cfg.cluster, [n["Resources"] for n in ray.nodes() if n["Alive"]])
    for group, names in missing_resources(cluster, ray.cluster_resources()).items():
        log(f"warning: no live node offers {names} for the {group} actors; they wait until one joins (autoscaler)")
    log(f"actors: {cluster.rollout_actors} rollout, {cluster.grader_actors} grader, {cluster.learner_workers} learner")
    return cfg.model_copy(update={"cluster": cluster})


def open_registry(cfg: RunConfig):
    """The run registry: cluster.redis_url, which must answer, or a local redis-server under output_dir."""
    try:
        registry = RunRegistry(cfg)
    except RedisUnavailable as exc:
        raise StartupError(str(exc)) from None
    log(f"run registry: {registry.url} (python -m learner.runs list)")
    return registry
