"""The frozen reference policy π_ref, scoring traces where they are sampled.

SCoRe's KL terms need log π_ref of every sampled token. The reference never changes, so nothing
ties that forward pass to the learner: a rollout actor scores its own batch right after sampling
it and ships the log-probs with the batch (`TraceBatch.ref_logprobs`). With rollouts running
ahead of the learner (cluster.max_policy_lag >= 1) this takes about a quarter of the update's
compute (one forward of three: policy forward, backward, reference forward) off the learner's
critical path, onto actors that would otherwise wait for the next weights; and the learner no
longer holds a second copy of the model. verl's separate "ref" worker role and OpenRLHF's
reference model actors (`--ref_num_nodes`) do the same for the same reasons; here the reference
sits in the rollout actor's process, as verl colocates it with the actor/rollout role.
`cluster.reference_on=learner` keeps it on the learner ranks instead.
"""
from __future__ import annotations

import numpy as np
import torch

from common.scoring import micro_batch_count, micro_batches, token_logprobs
from protos import TraceBatch


class ReferencePolicy:
    """Log-probs of traces under the base model, as the learner would compute them (same
    temperature scaling, same per-token function), in micro-batches of bounded padded size."""

    def __init__(self, model_dir: str, temperature: float, micro_batch_tokens: int = 0, device: str | None = None):
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(self.device).eval()
        self.model.requires_grad_(False)
        self.temperature, self.micro_batch_tokens = temperature, micro_batch_tokens

    @torch.no_grad()
    def logprobs(self, batch: TraceBatch) -> np.ndarray:
        """float32 [n, T] like batch.tokens: log π_ref of each sampled token (the attempts') given the
        ones before it; 0 elsewhere (the loss reads no other)."""
        out = np.zeros(batch.tokens.shape, dtype=np.float32)
        for rows in micro_batches(batch.lengths, micro_batch_count(batch.lengths, self.micro_batch_tokens)):
            part = batch.select(rows)
            tokens = torch.from_numpy(part.tokens).to(self.device)
            lengths = torch.from_numpy(part.lengths).to(self.device)
            sampled = torch.from_numpy(part.segment > 0).to(self.device)
            logp = token_logprobs(self.model, tokens, lengths, self.temperature, sampled).cpu().numpy()
            for row, values, length in zip(rows, logp, part.lengths):
                out[row, :length] = values[:length]
        return out
