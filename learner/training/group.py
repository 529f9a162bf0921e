"""W learner ranks as Ray actors forming one torch.distributed group; the driver's handle on them."""
from __future__ import annotations

import numpy as np
import ray

from actors.weight_sync import WeightSender
from common.logs import configure_process
from common.ports import free_port
from learner.training.losses import Objective
from learner.training.worker import LearnerWorker


@ray.remote
class LearnerActor(LearnerWorker, WeightSender):
    """Thin Ray wrapper around LearnerWorker. Construction is two-phase: rank 0 names the
    rendezvous address (a port on its own node) before any rank can build its worker."""

    def __init__(self):
        pass  # the worker is built by setup(), once rank 0's address is known

    def rendezvous(self) -> str:
        return f"tcp://{ray.util.get_node_ip_address()}:{free_port('')}"

    def weight_group_address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), free_port("")

    def setup(self, threads: int, **worker_kwargs) -> None:
        configure_process(threads)
        LearnerWorker.__init__(self, **worker_kwargs)


class LearnerGroup:
    def __init__(self, model_dir: str, world_size: int, cpus: float, gpus: float, threads: int,
                 resources: dict | None = None, **worker_kwargs):
        options = {"num_cpus": cpus, "num_gpus": gpus, "resources": resources or {}}
        self.actors = [LearnerActor.options(**options).remote() for _ in range(world_size)]
        init_method = ray.get(self.actors[0].rendezvous.remote())  # rank 0's node hosts the store
        backend = "nccl" if gpus > 0 else "gloo"
        ray.get([
            a.setup.remote(
                threads=threads, model_dir=model_dir, rank=rank, world_size=world_size,
                init_method=init_method, backend=backend, **worker_kwargs,
            )
            for rank, a in enumerate(self.actors)
        ])

    def train_step(self, objective: Objective, rewards: np.ndarray, batch_refs: list) -> dict[str, float]:
        """Every rank gets the same batch refs (Ray resolves them in each rank's process) and
        rewards; rank 0's stats are the group's (they are all-reduced)."""
        return ray.get([a.train_step.remote(objective, rewards, *batch_refs) for a in self.actors])[0]

    def state_dict_ref(self):
        """A ref to the full state dict, put in the object store once by rank 0; the driver never fetches it."""
        refs = [a.full_state_dict.remote() for a in self.actors]
        ray.wait(refs, num_returns=len(refs))
        return refs[0]

    def save(self, out_dir: str) -> None:
        ray.get([a.save.remote(out_dir) for a in self.actors])

    def save_state(self, out_dir: str) -> None:
        ray.get([a.save_state.remote(out_dir) for a in self.actors])

    def load_state(self, in_dir: str) -> None:
        ray.get([a.load_state.remote(in_dir) for a in self.actors])

    def close(self) -> None:
        ray.get([a.close.remote() for a in self.actors])
