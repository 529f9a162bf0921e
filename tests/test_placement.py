"""Actor placement and `auto` counts from node resources (learner.placement), without Ray."""
import pytest

from learner.driver.placement import PlacementError, fits, local_resources, missing_resources, ray_options, resolve_counts
from protos import ConfigError, load_config

GROUPS = [
    "cluster.rollout_resources={rollout: 1}", "cluster.rollout_gpus=1",
    "cluster.grader_resources={grader: 1}", "cluster.grader_cpus=2",
    "cluster.learner_resources={learner: 1}", "cluster.learner_gpus=1",
]
GPU_ROLLOUT = {"CPU": 48, "GPU": 4, "rollout": 4}
GPU_LEARNER = {"CPU": 48, "GPU": 4, "learner": 4}
CPU_GRADER = {"CPU": 16, "grader": 8}
HEAD = {"CPU": 8}


def cluster(*overrides):
    return load_config(None, [*GROUPS, *overrides]).cluster


def test_ray_options_carry_the_groups_resources():
    c = cluster()
    assert ray_options(c, "rollout") == {"num_cpus": 1, "num_gpus": 1, "resources": {"rollout": 1}}
    assert ray_options(c, "grader") == {"num_cpus": 2, "num_gpus": 0.0, "resources": {"grader": 1}}


def test_fits_is_limited_by_the_scarcest_resource():
    assert fits(GPU_ROLLOUT, {"CPU": 1, "GPU": 1, "rollout": 1}) == 4
    assert fits(GPU_ROLLOUT, {"CPU": 20, "GPU": 1, "rollout": 1}) == 2
    assert fits(HEAD, {"CPU": 1, "GPU": 0, "rollout": 1}) == 0
    assert fits({"CPU": 0.3}, {"CPU": 0.1}) == 3  # float division noise does not lose an actor


def test_auto_counts_what_the_node_groups_hold():
    c = cluster("cluster.rollout_actors=auto", "cluster.grader_actors=auto", "cluster.learner_workers=auto")
    nodes = [HEAD, GPU_ROLLOUT, GPU_ROLLOUT, GPU_LEARNER, CPU_GRADER]
    resolved = resolve_counts(c, nodes)
    assert (resolved.rollout_actors, resolved.grader_actors, resolved.learner_workers) == (8, 8, 4)
    assert c.rollout_actors == "auto", "resolving returns a copy"


def test_numbers_are_kept_and_auto_with_no_node_is_an_error_naming_the_key():
    c = cluster("cluster.rollout_actors=3", "cluster.grader_actors=auto")
    assert resolve_counts(c, [GPU_ROLLOUT, CPU_GRADER]).rollout_actors == 3
    with pytest.raises(PlacementError, match=r"cluster.grader_actors=auto: no live node .* grader: 1"):
        resolve_counts(c, [HEAD, GPU_ROLLOUT])


def test_a_local_ray_offers_what_fixed_counts_need_and_refuses_auto():
    assert local_resources(cluster("cluster.rollout_actors=2", "cluster.grader_actors=3")) == {
        "rollout": 2, "grader": 3, "learner": 1,
    }
    with pytest.raises(PlacementError, match="cluster.learner_workers=auto needs a Ray cluster"):
        local_resources(cluster("cluster.learner_workers=auto"))


def test_groups_no_live_node_offers_are_named():
    assert missing_resources(cluster(), {"CPU": 8, "rollout": 4, "grader": 8}) == {"learner": ["learner"]}


@pytest.mark.parametrize("overrides, fragment", [
    (["cluster.rollout_actors=auto"], "rollout_resources must name a custom resource"),
    (["cluster.grader_resources={GPU: 1}"], "['GPU'] are set by grader_cpus / grader_gpus"),
    (["cluster.learner_resources={learner: 0}"], "every amount must be > 0"),
    (["cluster.grader_actors=0"], "cluster.grader_actors: got 0"),
    (["cluster.learner_workers=some"], "a whole number >= 1 or 'auto'"),
])
def test_bad_placement_settings_are_named(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert fragment in str(err.value)
