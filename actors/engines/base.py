"""The generation-engine interface every rollout engine implements (vLLM, transformers).

Prompts and outputs are token ids: the trace the learner trains on must be exactly the tokens
that were sampled, so nothing is re-tokenized between generation and the loss.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    seed: int | None = None
    top_p: float = 1.0  # nucleus sampling (the serving API's top_p); training samples the full distribution


@dataclass
class Generation:
    token_ids: list[int]  # includes the EOS token when finish_reason == "stop"
    logprobs: list[float]  # the engine's log-prob of each sampled token (under the sampling distribution)
    finish_reason: str  # "stop" (EOS) or "length"


# on_tokens(i, token_ids): prompt i's newest tokens, from the generating thread, as each decoding step
# produces them; in order, so that their concatenation is prompt i's Generation.token_ids. The serving
# API streams the last attempt through it.
TokenSink = Callable[[int, list[int]], None]


class GenerationEngine(ABC):
    """Holds one policy's weights; generates; takes new weights in place.

    `tokenizer` is the model directory's own (a transformers tokenizer): the rollout renders turns
    and decodes attempts with it, the engine itself speaks token ids only.
    """

    version: int = 0
    tokenizer = None

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 on_tokens: TokenSink | None = None) -> list[Generation]:
        """One generation per prompt, in order; `on_tokens` (optional) hears each step's tokens as they come."""

    @abstractmethod
    def update_weights(self, version: int, state_dict: dict) -> None:
        """Load a full (unsharded) state dict of torch tensors and set `version`."""
