"""Generation with vLLM: the fast rollout engine.

The engine runs in this process (no engine-core subprocess), which is what lets
`update_weights` hand the learner's tensors to vLLM's worker by reference instead of
serialising them. The same class runs on CUDA (vLLM picks the device); only the CPU build
needs the float32 default below.

`generate` steps vLLM's LLMEngine (the engine `LLM.generate` drives) itself rather than calling
`LLM.generate`, which asks for each request's final output only: with `on_tokens` the requests
ask for their output after every step instead (RequestOutputKind.DELTA), and the serving API
streams an attempt from them as vLLM generates it. Without it, the requests and the loop are
`LLM.generate`'s.
"""
from __future__ import annotations

import os

# Read by vLLM when the engine is built; set before anything can build one.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
# vLLM logs several INFO/WARNING lines on every weight update ("RotaryEmbedding: Failed to load
# weights": it has none; "reset prefix cache"), which would bury the run's progress lines. Errors
# still show; VLLM_LOGGING_LEVEL=INFO brings the rest back.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import vllm  # noqa: E402
from vllm.inputs import tokens_input  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402
from vllm.sampling_params import RequestOutputKind  # noqa: E402

from actors.engines.base import Generation, GenerationEngine, SamplingParams, TokenSink  # noqa: E402


class VLLMEngine(GenerationEngine):
    def __init__(
        self,
        model_dir: str | Path,
        kv_cache_bytes: int = 1 << 30,
        max_num_seqs: int = 256,
        enforce_eager: bool = True,
        enable_prefix_caching: bool = True,  # attempt 2's prompt starts with attempt 1's
        seed: int = 0,
        **llm_kwargs,
    ):
        """`enforce_eager` skips torch.compile: start-up in seconds instead of ~30 s, and on the
        small CPU models here compiled decoding was no faster (benchmarks/bench_engines.py).
        Extra keyword arguments go to `vllm.LLM` unchanged."""
        if current_platform.is_cpu():
            # float32: faster than bfloat16 on the CPU build. No chunked prefill: a request whose
            # prefill is split rewinds its seeded generator, which CPU generators cannot do
            # ("CPU Generator does not use offset", vLLM 0.32). KV blocks of 32 tokens, the CPU
            # attention's smallest, instead of its default 128: prefix caching reuses full blocks
            # only, and attempt 2's prompt (x1 + y1 + p) is shorter than 128 tokens on the built-in
            # task, so with 128 it re-prefilled all of attempt 1; with 32 sampling both attempts
            # takes about 28% less time (benchmarks/bench_engines.py).
            llm_kwargs = {"dtype": "float32", "enable_chunked_prefill": False, "block_size": 32, **llm_kwargs}
        # The CPU worker replaces torch.set_num_threads with a no-op for the whole process (it
        # expects to own a pinned subprocess); in-process that would silently freeze the caller's
        # thread count, so the original is put back once the engine is built.
        set_num_threads = torch.set_num_threads
        try:
            self.llm = vllm.LLM(
                model=str(model_dir),
                seed=seed,
                enable_prefix_caching=enable_prefix_caching,
                kv_cache_memory_bytes=kv_cache_bytes,
                max_num_seqs=max_num_seqs,
                enforce_eager=enforce_eager,
                # the log-prob of each sampled token after temperature scaling, i.e. under the
                # distribution it was drawn from (the default, raw_logprobs, ignores temperature)
                logprobs_mode="processed_logprobs",
                **llm_kwargs,
            )
        finally:
            torch.set_num_threads = set_num_threads
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.version = 0

    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 on_tokens: TokenSink | None = None) -> list[Generation]:
        if not prompts:
            return []
        # vLLM seeds each request separately: one seed for all would make the k samples of a
        # repeated prompt identical, so each request gets its own seed drawn from the call's seed.
        seeds = (
            np.random.SeedSequence(params.seed).generate_state(len(prompts)).tolist()
            if params.seed is not None
            else [None] * len(prompts)
        )
        engine = self.llm.llm_engine
        index: dict[str, int] = {}  # request id -> prompt
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        finish: list[str | None] = [None] * len(prompts)
        try:
            for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
                sampling = vllm.SamplingParams(
                    max_tokens=params.max_new_tokens,
                    temperature=params.temperature,  # vLLM is greedy at 0, like TransformersEngine
                    top_p=params.top_p,
                    seed=seed,
                    logprobs=0,  # only the sampled token's
                    flat_logprobs=True,  # plain float lists instead of a dict per token
                    detokenize=False,
                    # every step's new tokens when they are streamed, else the finished request only
                    output_kind=RequestOutputKind.DELTA if on_tokens else RequestOutputKind.FINAL_ONLY,
                )
                request_id = str(next(self.llm.request_counter))  # LLM.generate's ids: they cannot collide
                engine.add_request(request_id, tokens_input(list(prompt)), sampling)
                index[request_id] = i
            while engine.has_unfinished_requests():
                for out in engine.step():
                    i, completion = index[out.request_id], out.outputs[0]
                    if completion.token_ids:
                        tokens[i] += completion.token_ids
                        logprobs[i] += completion.logprobs.logprobs
                        if on_tokens is not None:
                            on_tokens(i, list(completion.token_ids))
                    if out.finished:
                        finish[i] = completion.finish_reason
        except BaseException:
            # a failed call must not leave requests behind for the next call's loop to run (finished
            # requests' ids are ignored)
            engine.abort_request(list(index))
            raise
        return [_to_generation(t, lp, reason) for t, lp, reason in zip(tokens, logprobs, finish)]

    def update_weights(self, version: int, state_dict: dict) -> None:
        """Loads the tensors in place through the worker's own reload path (the CPU build repacks
        linear weights on load, so a plain copy into the parameters would be wrong); works only
        with the single in-process worker."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state_dict.items())})
        # cached KV blocks were computed by the old weights
        self.llm.reset_prefix_cache()
        self.version = version


def _to_generation(token_ids: list[int], logprobs: list[float], finish_reason: str | None) -> Generation:
    if finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM finished a request with reason {finish_reason!r}")
    return Generation(token_ids, logprobs, finish_reason)
