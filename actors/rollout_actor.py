"""The Ray actor around RolloutWorker: builds its engine where it runs, takes weights by reference."""
from __future__ import annotations

import ray

from actors.engines.base import SamplingParams
from actors.logs import quiet_transformers
from learner import telemetry
from protos import Problem, TraceBatch


@ray.remote
class RolloutActor:
    def __init__(self, engine_kind: str, model_dir: str, task_name: str, task_params: dict, threads: int):
        import torch
        from transformers import AutoTokenizer

        from actors.engines import make_engine
        from actors.rollout import RolloutWorker
        from actors.turns import Turns
        from graders.registry import make_task

        torch.set_num_threads(threads)
        quiet_transformers()
        # Engines speak token ids; the tokenizer, which renders turns and decodes attempts, is ours.
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        engine = make_engine(engine_kind, model_dir)
        self.worker = RolloutWorker(engine, Turns(tokenizer, make_task(task_name, task_params)), tokenizer.pad_token_id)

    def rollout(self, problems: list[Problem], k: int, params: SamplingParams) -> TraceBatch:
        batch = self.worker.rollout(problems, k, params)
        telemetry.record_rollout(batch.timings)
        return batch

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> None:
        from actors.engines.nccl_sync import WeightBroadcastGroup

        self.weight_group = WeightBroadcastGroup(host, port, rank, world_size, backend, timeout_s)

    def receive_weights(self) -> int:
        return self.weight_group.receive_into(self.worker.engine)

    def update_weights(self, version: int, state_dict: dict) -> int:
        # `state_dict` arrives as the resolved ObjectRef the learner put once for every actor
        self.worker.engine.update_weights(version, state_dict)
        return version
