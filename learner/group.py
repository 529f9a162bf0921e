"""W learner ranks as Ray actors forming one torch.distributed group; the controller's handle on them."""
from __future__ import annotations

import ray

from actors.logs import quiet_transformers
from learner.losses import Objective
from learner.ports import free_port


@ray.remote
class LearnerActor:
    """Thin wrapper: all logic is in learner.worker.LearnerWorker."""

    def rendezvous(self) -> str:
        return f"tcp://{ray.util.get_node_ip_address()}:{free_port('')}"

    def setup(self, threads: int, **kwargs) -> None:
        import torch

        from learner.worker import LearnerWorker

        torch.set_num_threads(threads)
        quiet_transformers()
        self.worker = LearnerWorker(**kwargs)

    def train_step(self, batch_refs: list, objective: Objective) -> dict[str, float]:
        from protos import TraceBatch

        return self.worker.train_step(TraceBatch.concat(ray.get(batch_refs)), objective)

    def full_state_dict(self):
        return self.worker.full_state_dict()

    def weight_group_address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), free_port("")

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
        from actors.engines.nccl_sync import WeightBroadcastGroup

        self.weight_group = WeightBroadcastGroup(host, port, rank, world_size, backend, timeout_s)

    def send_weights(self, version: int) -> None:
        state = self.worker.full_state_dict()  # a collective over the learner ranks
        if state is not None:
            self.weight_group.send(version, state)

    def save(self, out_dir: str) -> None:
        state = self.worker.full_state_dict()
        if state is not None:
            self.worker.save(out_dir, state)

    def close(self) -> None:
        self.worker.close()


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

    def train_step(self, batch_refs: list, objective: Objective) -> dict[str, float]:
        """Every rank gets the same batch refs; rank 0's stats are the group's (they are all-reduced)."""
        return ray.get([a.train_step.remote(batch_refs, objective) for a in self.actors])[0]

    def state_dict_ref(self):
        """A ref to the full state dict, put in the object store once by rank 0; the driver never fetches it."""
        refs = [a.full_state_dict.remote() for a in self.actors]
        ray.wait(refs, num_returns=len(refs))
        return refs[0]

    def save(self, out_dir: str) -> None:
        ray.get([a.save.remote(out_dir) for a in self.actors])

    def close(self) -> None:
        ray.get([a.close.remote() for a in self.actors])
