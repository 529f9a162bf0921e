"""The generation-engine interface every rollout engine implements (vLLM, transformers).

Prompts and outputs are token ids: the trace the learner trains on must be exactly the tokens
that were sampled, so nothing is re-tokenized between generation and the loss.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    seed: int | None = None


@dataclass
class Generation:
    token_ids: list[int]  # includes the EOS token when finish_reason == "stop"
    logprobs: list[float]  # the engine's log-prob of each sampled token (under the sampling distribution)
    finish_reason: str  # "stop" (EOS) or "length"


class GenerationEngine(ABC):
    """Holds one policy's weights; generates; takes new weights in place.

    `tokenizer` is the model directory's own (a transformers tokenizer): the rollout renders turns
    and decodes attempts with it, the engine itself speaks token ids only.
    """

    version: int = 0
    tokenizer = None

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """One generation per prompt, in order."""

    @abstractmethod
    def update_weights(self, version: int, state_dict: dict) -> None:
        """Load a full (unsharded) state dict of torch tensors and set `version`."""
