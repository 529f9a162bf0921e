"""Scoring sampled traces under a model: per-token log-probs, in length-sorted micro-batches.

Shared by the two places a trace is scored: the learner (the policy being trained, with gradients)
and the frozen reference policy π_ref of the KL terms, which runs on the rollout actors by default
(actors/reference.py) or on the learner (`cluster.reference_on`).
"""
from __future__ import annotations

import numpy as np
import torch


def token_logprobs(model, tokens: torch.Tensor, lengths: torch.Tensor, temperature: float = 1.0,
                   scored: torch.Tensor | None = None) -> torch.Tensor:
    """log π(tokens[:, t] | tokens[:, :t]) for t >= 1; column 0 (no context) is 0.

    Logits are divided by the sampling temperature, so the policy scored is the one sampled from.
    `scored` (bool, like `tokens`): compute only these positions, 0 elsewhere. Training needs the
    log-probs of the sampled tokens only (under half of a trace), and the output head and its
    softmax over the vocabulary are most of the rest of a forward pass's elementwise work, so the
    head sees only the hidden states that predict a scored token (as verl's and OpenRLHF's
    log-prob functions gather response positions before the head). The model is still called as a
    whole (FSDP2 gathers the head's weights in the root module's forward): a pre-hook on its
    output head picks the rows.
    """
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    attention = (positions[None, :] < lengths[:, None]).long()
    if scored is None:
        scored = (positions[None, :] > 0) & (attention > 0)
    picks = scored[:, 1:]  # predicted by the hidden state one position earlier
    pick_rows = lambda _module, args: (args[0][:, :-1][picks],)  # noqa: E731
    hook = model.get_output_embeddings().register_forward_pre_hook(pick_rows)
    try:
        logits = model(input_ids=tokens, attention_mask=attention).logits.float() / temperature  # [picked, vocab]
    finally:
        hook.remove()
    picked = torch.gather(logits, -1, tokens[:, 1:][picks][:, None]).squeeze(-1)
    logp = picked - torch.logsumexp(logits, dim=-1)
    out = torch.zeros(picks.shape, dtype=logp.dtype, device=logp.device).masked_scatter(picks, logp)
    return torch.nn.functional.pad(out, (1, 0))


def micro_batch_count(lengths: np.ndarray, budget_tokens: int) -> int:
    """How many micro-batches of at most about `budget_tokens` padded tokens the rows of `lengths`
    need when sorted by length, so that each pads only to its own longest row (as verl's dynamic
    batch size does); 0 = no budget, one batch."""
    if not budget_tokens:
        return 1
    count, rows, longest = 1, 0, 0
    for length in np.sort(lengths, kind="stable"):
        if rows and (rows + 1) * max(longest, length) > budget_tokens:
            count, rows, longest = count + 1, 0, 0
        rows, longest = rows + 1, max(longest, int(length))
    return count


def micro_batches(lengths: np.ndarray, count: int) -> list[np.ndarray]:
    """The row indices of `lengths`, sorted by length, in `count` (or fewer, if there are fewer rows)
    nearly equal micro-batches."""
    order = np.argsort(lengths, kind="stable")
    return [part for part in np.array_split(order, max(1, min(count, len(order)))) if len(part)]
