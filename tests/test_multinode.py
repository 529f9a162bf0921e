"""Node groups for real: a head and a worker node (`ray start`) offering different custom resources, a
run submitted with cluster/configs/two-nodes.yaml, and each actor found on the node its group names."""
import json
import subprocess

import pytest

from e2e import ROOT, quick_overrides
from ray_head import BIN, add_worker, ray_head


@pytest.mark.slow
def test_actor_groups_run_on_the_nodes_offering_their_resources(tmp_path):
    with ray_head(num_cpus=2, resources={"grader": 2}) as head:
        add_worker(head, num_cpus=2, resources={"rollout": 1, "learner": 1})
        proc = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", head.dashboard, "--working-dir", ".", "--",
             "python", "-m", "learner.main", "--config", "cluster/configs/two-nodes.yaml", *quick_overrides(tmp_path)],
            cwd=ROOT, env=head.env, capture_output=True, text=True, timeout=900,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert "actors: 1 rollout, 2 grader, 1 learner" in out  # `auto`, from the nodes' resources

        # Ray's state API keeps the finished job's actors, each with the node it ran on
        nodes, actors = (
            json.loads(subprocess.run(
                [str(BIN / "ray"), "list", kind, "--address", head.dashboard, "--detail", "--format", "json",
                 "--limit", "1000"],
                env=head.env, capture_output=True, text=True, timeout=120, check=True,
            ).stdout)
            for kind in ("nodes", "actors")
        )
    (head_id,) = [n["node_id"] for n in nodes if n["is_head_node"]]
    placed: dict[str, set[str]] = {}
    for actor in actors:
        placed.setdefault(actor["class_name"], set()).add("head" if actor["node_id"] == head_id else "worker")
    assert placed["GraderWorker"] == {"head"}, placed
    assert placed["RolloutActor"] == {"worker"}, placed
    assert placed["LearnerActor"] == {"worker"}, placed
    count = {name: sum(a["class_name"] == name for a in actors) for name in ("GraderWorker", "RolloutActor", "LearnerActor")}
    assert count == {"GraderWorker": 2, "RolloutActor": 1, "LearnerActor": 1}

    # the run's registry entry, kept by the embedded Redis under output_dir, outlives the cluster
    shown = subprocess.run(
        [str(BIN / "python"), "-m", "learner.runs", "--output-dir", str(tmp_path / "runs"), "list"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "score-two-nodes-" in shown.stdout and "finished" in shown.stdout
    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "summary.json").exists()]
    resolved = (run / "config.yaml").read_text()
    assert "rollout_actors: 1" in resolved and "grader_actors: 2" in resolved, "config.yaml keeps the resolved counts"
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
