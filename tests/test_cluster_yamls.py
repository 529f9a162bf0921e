"""The shipped cluster YAMLs: the launcher file against the schema Ray ships, the KubeRay manifests parsed,
and, for both, every actor group of the run config they run fits on exactly its own node group."""
import copy
import json
import shlex
from pathlib import Path

import jsonschema
import ray
import yaml

from learner.main import parse_args
from learner.driver.placement import GROUPS, demand, fits, resolve_counts
from protos import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
GPU_RUN = CLUSTER / "configs" / "gpu-cluster.yaml"


def check_node_groups(cfg, node_types: dict[str, tuple[dict, int, int]]) -> dict[str, int]:
    """node_types: name -> (resources of one node, min nodes, max nodes). Returns the counts at min size.

    Each actor group must fit on exactly one node type, the head on none (it keeps the driver); a numeric
    count must fit in the group's nodes at their maximum.
    """
    c = cfg.cluster
    for group, key in GROUPS.items():
        hosts = {name: fits(res, demand(c, group)) for name, (res, _, _) in node_types.items()}
        hosts = {name: n for name, n in hosts.items() if n}
        assert len(hosts) == 1, f"{group} actors fit on node types {sorted(hosts)}, expected exactly one"
        (name, per_node), = hosts.items()
        if getattr(c, key) != "auto":
            assert getattr(c, key) <= per_node * node_types[name][2], f"cluster.{key} exceeds {name}'s capacity"
    live = [res for res, low, _ in node_types.values() for _ in range(low)]
    resolved = resolve_counts(c, live)
    return {key: getattr(resolved, key) for key in GROUPS.values()}


# --- Ray cluster launcher (AWS) ---

def launcher():
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def test_launcher_yaml_validates_against_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(launcher(), schema)
    # and what `ray up` does with it: fill in the provider's defaults, validate again
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(launcher())))


def test_launcher_node_groups_host_the_gpu_run_configs_actors():
    spec = launcher()
    node_types = {
        name: (t["resources"], t.get("min_workers", 1 if name == spec["head_node_type"] else 0),
               t.get("max_workers", 1 if name == spec["head_node_type"] else spec["max_workers"]))
        for name, t in spec["available_node_types"].items()
    }
    counts = check_node_groups(load_config(GPU_RUN, check_paths=False), node_types)  # its paths are the cluster's
    assert counts == {"rollout_actors": 4, "grader_actors": 8, "learner_workers": 4}


# --- KubeRay ---

def kuberay(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if doc]


def kuberay_node(group: dict) -> dict[str, float]:
    """The Ray resources of one pod of a group: rayStartParams first, else the container's limits (as KubeRay)."""
    params = group["rayStartParams"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    resources = {"CPU": float(params.get("num-cpus", limits["cpu"])),
                 "GPU": float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}
    if "resources" in params:  # KubeRay's format: a JSON string holding the JSON object
        resources.update(json.loads(json.loads(params["resources"])))
    return resources


def raycluster() -> dict:
    (doc,) = kuberay("raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    return doc


def kuberay_node_types(spec: dict) -> dict[str, tuple[dict, int, int]]:
    types = {"head": (kuberay_node(spec["headGroupSpec"]), 1, 1)}
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        types[group["groupName"]] = (kuberay_node(group), group["replicas"], group["maxReplicas"])
    return types


def test_raycluster_pods_are_sized_as_their_ray_resources_say():
    spec = raycluster()["spec"]
    assert spec["rayVersion"] == ray.__version__
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert resources["limits"] == resources["requests"], "a Ray node must get the CPUs/GPUs it advertises"
        node = kuberay_node(group)
        assert node["CPU"] <= float(resources["limits"]["cpu"]) and node["GPU"] == float(resources["limits"].get("nvidia.com/gpu", 0))


def test_rayjob_runs_a_valid_config_that_fits_the_rayclusters_groups():
    (job,) = kuberay("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == raycluster()["metadata"]["name"]

    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "learner.main"]
    args = parse_args(argv[3:])
    assert args.config.startswith("/app/"), "the image has the repository at /app (cluster/Dockerfile)"
    cfg = load_config(ROOT / args.config.removeprefix("/app/"), args.overrides, check_paths=False)
    counts = check_node_groups(cfg, kuberay_node_types(raycluster()["spec"]))
    assert counts == {"rollout_actors": 4, "grader_actors": 8, "learner_workers": 4}



def test_the_local_config_is_the_embedded_default_written_out():
    """cluster/configs/local.yaml says it is the default run: it must not drift from RunConfig's defaults."""
    from graders.registry import make_task

    written = load_config(CLUSTER / "configs" / "local.yaml")
    default = load_config()
    skip = {"name": True, "task": {"params"}}
    assert written.model_dump(exclude=skip) == default.model_dump(exclude=skip)
    written_task, default_task = make_task(written.task.name, written.task.params), make_task(default.task.name)
    assert written_task.eval_problems(50) == default_task.eval_problems(50)  # its spelled-out params are the task's defaults
