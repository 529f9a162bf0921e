"""One rank of the learner: the policy sharded with FSDP2, the SCoRe update, and (with
cluster.reference_on=learner) the frozen reference; by default the rollout actors score batches
with the reference and the learner holds none (actors/reference.py says why).

Every rank receives the whole batch (ObjectRefs resolved by Ray) and its rewards, computes the
RLOO advantages on it (they need every sample of a prompt), and trains on its own slice of the rows.
FSDP2 averages gradients over ranks, so each rank's loss is scaled by the world size to make the
update equal to the single-process one on the full batch.

On GPUs (backend nccl) each rank holds one GPU and computes in `dtype` (bfloat16 there, as a rule):
FSDP2's mixed precision casts the gathered weights to it, while the sharded master weights, the
optimizer state and the gradient reduction stay float32 (torchtitan's and verl's FSDP2 default).
The batch arrives as numpy and is moved to the rank's device micro-batch by micro-batch.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from common.scoring import micro_batch_count, micro_batches, token_logprobs
from learner.training.losses import Objective, advantages, pair_count, pair_loss, score_loss
from learner.training.pairs import repair_pairs
from protos import ATTEMPT2, TraceBatch
from protos.batch import graded_groups

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=5)


class LearnerWorker:
    def __init__(
        self,
        model_dir: str,
        rank: int,
        world_size: int,
        init_method: str,
        lr: float,
        grad_clip: float,
        temperature: float,
        backend: str = "gloo",
        seed: int = 0,
        micro_batch_tokens: int = 0,
        reference: bool = True,
        dtype: str = "float32",
    ):
        """`reference`: hold the frozen reference model and score batches with it; False when the
        rollout actors score them (every batch then carries `ref_logprobs`). `dtype`: what the
        forward and backward passes compute in (float32 or bfloat16)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        self.grad_clip, self.temperature = grad_clip, temperature
        self.micro_batch_tokens = micro_batch_tokens
        if backend == "nccl":  # one GPU per rank: Ray shows each rank its own as cuda:0
            torch.cuda.set_device(rank % torch.cuda.device_count())
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT)
        mesh = init_device_mesh(self.device.type, (world_size,))
        compute = getattr(torch, dtype)
        precision = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        for layer in self.model.model.layers:
            fully_shard(layer, mesh=mesh, mp_policy=precision)
        fully_shard(self.model, mesh=mesh, mp_policy=precision)  # moves the shards to the mesh's device
        self.reference = None
        if reference:
            self.reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=compute).to(self.device).eval()
            self.reference.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    def my_rows(self, n: int) -> np.ndarray:
        return np.arange(self.rank, n, self.world_size)

    def train_step(self, objective: Objective, rewards: np.ndarray, *batches: TraceBatch) -> dict[str, float]:
        """One update on `batches` (each sampled by one policy version, not necessarily the same),
        whose traces in order have `rewards` (float [n, 2]: attempt 1, attempt 2; NaN where no
        verdict was given). Returns the step's stats, the same on every rank."""
        started = time.perf_counter()
        batch = TraceBatch.concat(batches)
        if rewards.shape != (len(batch), 2):
            raise ValueError(f"rewards of shape {rewards.shape} for {len(batch)} traces")
        keep = graded_groups(rewards, batch.groups)  # NaN: no verdict; such groups are left out, not scored 0
        if not keep.all():
            batch, rewards = batch.select(np.flatnonzero(keep)), rewards[keep]
        if objective.method == "pair_sft":  # trains on rows made from the batch: [x, y1 wrong, p, y* right]
            batch, rewards = repair_pairs(batch, rewards)
        adv1, adv2 = advantages(rewards[:, 0], rewards[:, 1], batch.groups, objective)
        rows = self.my_rows(len(batch))
        pairs = pair_count(adv2, objective)  # of the whole batch, not this rank's rows

        if objective.lr is not None:  # e.g. Stage II's own learning rate (score.stage2_lr)
            for group in self.optimizer.param_groups:
                group["lr"] = objective.lr
        self.model.train()
        stats: dict[str, float] = {}
        gaps = []
        for part in self._micro_batches(batch.lengths[rows]):
            shard = batch.select(rows[part])
            tokens, lengths, segment = self._on_device(shard.tokens, shard.lengths, shard.segment)
            sampled = segment > 0  # the loss reads the attempts' tokens only
            logp = token_logprobs(self.model, tokens, lengths, self.temperature, sampled)
            ref_logp = self._reference_logprobs(shard, tokens, lengths, sampled)
            shard_adv1, shard_adv2, sample_logp = self._on_device(
                adv1[rows[part]].astype(np.float32), adv2[rows[part]].astype(np.float32), shard.sample_logprobs)
            loss, part_stats = score_loss(
                logp,
                ref_logp,
                segment,
                shard_adv1,
                shard_adv2,
                objective,
                total_traces=len(batch),
                sample_logp=sample_logp,
                total_pairs=pairs,
            )
            (loss * self.world_size).backward()  # gradients accumulate over the micro-batches
            for key, value in part_stats.items():
                stats[key] = stats.get(key, 0.0) + value
            mask = sampled.cpu().numpy()
            # learner vs engine log-probs of the same sampled tokens: the engine's numerical gap,
            # plus the policy lag when the batch was sampled by older weights
            gaps.append(logp.detach().cpu().numpy()[mask] - shard.sample_logprobs[mask])
        stats.update(self._pair_term(objective.pair_coef, batch, rewards))
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        gap = np.concatenate(gaps)
        ratio = np.exp(gap.astype(np.float64))  # π_learner / π_sampler, the importance ratio before truncation
        local = {
            **stats,
            "logprob_abs_diff_sum": float(np.abs(gap).sum()),
            "logprob_kl_sum": float((np.expm1(gap) - gap).sum()),  # k3 of KL(engine || learner)
            "is_ratio_sum": float(ratio.sum()),
            "is_clipped_sum": float((ratio > objective.is_cap).sum()) if objective.is_cap else 0.0,
            "tokens": float(len(gap)),
        }
        totals = self._reduce(local, dist.ReduceOp.SUM)
        tokens_total = max(totals.pop("tokens"), 1.0)
        ratio_max = self._reduce({"max": float(ratio.max(initial=0.0))}, dist.ReduceOp.MAX)["max"]
        return {
            **{k: v for k, v in totals.items() if not k.endswith("_sum")},
            "logprob_abs_diff": totals["logprob_abs_diff_sum"] / tokens_total,
            "logprob_kl": totals["logprob_kl_sum"] / tokens_total,
            "is_ratio_mean": totals["is_ratio_sum"] / tokens_total,
            "is_ratio_max": ratio_max,
            "is_clipped_frac": totals["is_clipped_sum"] / tokens_total,
            "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "learner_tokens": tokens_total,
            "learner_s": time.perf_counter() - started,
        }

    def _pair_term(self, coef: float, batch: TraceBatch, rewards: np.ndarray) -> dict[str, float]:
        """SCoRe's auxiliary Pair-SFT term (score.pair_coef): backward through λ·(-log π(y*)) averaged
        over the Pair-SFT rows of this step's own batch, its gradients added to the RL loss's. Every
        rank scores the same number of rows (FSDP's collectives need the same passes): the last ranks
        pad theirs with row 0 at weight 0. Off (coef 0) or without a row: nothing, and zeros."""
        paired, paired_rewards = repair_pairs(batch, rewards) if coef else (batch, np.zeros((0, 2)))
        total = int(paired_rewards[:, 1].sum())  # 0: off, or the batch gave no row
        if not total:
            return {"pair_loss": 0.0, "pair_rows": 0.0}
        rows = self.my_rows(total)
        per_rank = -(-total // self.world_size)
        weight = np.r_[np.full(len(rows), coef), np.zeros(per_rank - len(rows))].astype(np.float32)
        rows = np.r_[rows, np.zeros(per_rank - len(rows), dtype=rows.dtype)]
        loss_sum = 0.0
        for part in self._micro_batches(paired.lengths[rows]):
            shard = paired.select(rows[part])
            tokens, lengths, segment, row_weight = self._on_device(shard.tokens, shard.lengths, shard.segment, weight[part])
            logp = token_logprobs(self.model, tokens, lengths, self.temperature, segment == ATTEMPT2)
            loss = pair_loss(logp, segment, row_weight, total)
            (loss * self.world_size).backward()
            loss_sum += float(loss.detach())
        return {"pair_loss": loss_sum, "pair_rows": float((weight > 0).sum())}  # summed over the ranks

    def _on_device(self, *arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a).to(self.device, non_blocking=True) for a in arrays)

    def _micro_batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """This rank's rows in micro-batches of at most about `micro_batch_tokens` padded tokens,
        sorted by length. Every rank runs the same number of them (FSDP's collectives need it)."""
        if not self.micro_batch_tokens:
            return [np.arange(len(lengths))]
        count = micro_batch_count(lengths, self.micro_batch_tokens)
        return micro_batches(lengths, int(self._reduce({"count": float(count)}, dist.ReduceOp.MAX)["count"]))

    def _reference_logprobs(self, shard: TraceBatch, tokens: torch.Tensor, lengths: torch.Tensor,
                            sampled: torch.Tensor) -> torch.Tensor:
        """log π_ref of the shard's tokens: as the rollout actor scored them, or computed here."""
        if shard.ref_logprobs is not None:
            return self._on_device(shard.ref_logprobs)[0]
        if self.reference is None:
            raise ValueError("a batch without reference log-probs reached a learner that holds no reference model "
                             "(cluster.reference_on=rollout: the rollout actors must score every training batch)")
        with torch.no_grad():
            return token_logprobs(self.reference, tokens, lengths, self.temperature, sampled)

    def _reduce(self, values: dict[str, float], op) -> dict[str, float]:
        """The values over all ranks (summed, or their maximum)."""
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)  # NCCL reduces on the GPU
        dist.all_reduce(t, op=op)
        return dict(zip(keys, t.tolist()))

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The unsharded weights on rank 0 (None elsewhere). Every rank must call it: it is a collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.rank == 0 else None

    def save_state(self, out_dir: str | Path) -> None:
        """The policy and optimizer state, sharded as FSDP holds it: each rank writes its own shards
        (torch.distributed.checkpoint), so no rank ever gathers the whole model. Every rank must call
        it, with the same directory (on several nodes, storage they all see)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optimizer = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model, "optimizer": optimizer}, checkpoint_id=str(out_dir))

    def load_state(self, in_dir: str | Path) -> None:
        """Load what save_state wrote, into this rank's shards (any world size: DCP reshards)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model, optimizer = get_state_dict(self.model, self.optimizer)
        state = {"model": model, "optimizer": optimizer}
        dcp.load(state, checkpoint_id=str(in_dir))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

    def save(self, out_dir: str | Path) -> None:
        """Write a Hugging Face directory (rank 0). Every rank must call it: it gathers the weights."""
        from transformers import AutoModelForCausalLM

        state = self.full_state_dict()
        if state is None:
            return
        model = AutoModelForCausalLM.from_config(self.model.config)
        model.load_state_dict(state)
        model.save_pretrained(out_dir)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
