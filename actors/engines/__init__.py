"""Generation engines behind one interface; `make_engine` is the only place that picks one."""
from __future__ import annotations

from actors.engines.base import Generation, GenerationEngine, SamplingParams, TokenSink


def make_engine(kind: str, model_dir: str, **kwargs) -> GenerationEngine:
    if kind == "transformers":
        from actors.engines.hf_engine import TransformersEngine

        return TransformersEngine.from_pretrained(model_dir, **kwargs)
    if kind == "vllm":
        from actors.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_dir, **kwargs)
    raise ValueError(f"cluster.engine: unknown engine {kind!r} (choose transformers or vllm)")


__all__ = ["Generation", "GenerationEngine", "SamplingParams", "TokenSink", "make_engine"]
