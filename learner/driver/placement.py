"""Where actors run and how many: each actor group (rollout, grader, learner) asks Ray for its CPUs, GPUs
and custom resources; a node group that offers a custom resource (`ray start --resources`, the cluster
YAMLs) is where that group lands. A count of `auto` becomes the number of actors that fit on the live
nodes offering the group's custom resources, so scaling a node group scales its actors.

Plain functions over resource dicts: importable and testable without Ray.
"""
from __future__ import annotations

from protos.config import ClusterConfig

GROUPS = {"rollout": "rollout_actors", "grader": "grader_actors", "learner": "learner_workers"}

# Absorbs float division noise: 0.3 / 0.1 is 2.9999999999999996, and 3 graders of 0.1 CPU fit in 0.3.
_EPS = 1e-6


class PlacementError(ValueError):
    """The cluster cannot host a group as configured; the message names the config keys."""


def demand(c: ClusterConfig, group: str) -> dict[str, float]:
    """Everything one actor of `group` reserves, in Ray's resource names."""
    options = ray_options(c, group)
    return {"CPU": options["num_cpus"], "GPU": options["num_gpus"], **options["resources"]}


def ray_options(c: ClusterConfig, group: str) -> dict:
    """`.options(...)` for one actor of `group`."""
    return {
        "num_cpus": getattr(c, f"{group}_cpus"),
        "num_gpus": getattr(c, f"{group}_gpus", 0.0),  # graders have no GPU setting: they never use one
        "resources": dict(getattr(c, f"{group}_resources")),
    }


def fits(node: dict[str, float], need: dict[str, float]) -> int:
    """How many actors needing `need` one node with `node` resources holds."""
    limits = [int(node.get(name, 0.0) / amount + _EPS) for name, amount in need.items() if amount > 0]
    return min(limits) if limits else 0


def resolve_counts(c: ClusterConfig, nodes: list[dict[str, float]]) -> ClusterConfig:
    """A copy of `c` with every `auto` count replaced by what fits on `nodes` (live nodes' total resources).

    Each auto group is counted as if it had its nodes to itself: node groups are meant to be disjoint
    (one custom resource per group), as in the cluster YAMLs.
    """
    counts = {}
    for group, key in GROUPS.items():
        if getattr(c, key) != "auto":
            continue
        n = sum(fits(node, demand(c, group)) for node in nodes)
        if n == 0:
            raise PlacementError(
                f"cluster.{key}=auto: no live node can host one {group} actor needing {_fmt(demand(c, group))}; "
                f"start nodes offering cluster.{group}_resources (ray start --resources, or the node group in "
                "the cluster YAML), or give a number"
            )
        counts[key] = n
    return c.model_copy(update=counts)


def local_resources(c: ClusterConfig) -> dict[str, float]:
    """Custom resources a one-machine Ray must offer so that every configured actor can be placed on it."""
    autos = [key for key in GROUPS.values() if getattr(c, key) == "auto"]
    if autos:
        raise PlacementError(
            f"{', '.join('cluster.' + k for k in autos)}=auto needs a Ray cluster whose nodes offer the groups' "
            "resources (cluster.ray_address or RAY_ADDRESS); a local Ray has no node groups: give numbers"
        )
    total: dict[str, float] = {}
    for group, key in GROUPS.items():
        for name, amount in getattr(c, f"{group}_resources").items():
            total[name] = total.get(name, 0.0) + amount * getattr(c, key)
    return total


def missing_resources(c: ClusterConfig, offered: dict[str, float]) -> dict[str, list[str]]:
    """Custom resources a group asks for that no live node offers yet: {group: [names]}."""
    out = {}
    for group in GROUPS:
        absent = sorted(name for name in getattr(c, f"{group}_resources") if offered.get(name, 0.0) <= 0)
        if absent:
            out[group] = absent
    return out


def _fmt(need: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in need.items() if v > 0) + "}"
