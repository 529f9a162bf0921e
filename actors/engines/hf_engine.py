"""Generation with plain transformers: the fallback engine and the reference vLLM is tested against.

A hand-rolled decoding loop over a KV cache rather than `model.generate`, so that the
log-prob of every sampled token comes out under exactly the distribution it was sampled from
(temperature applied), batched with left padding. The loop hands every step's tokens to
`on_tokens` as it goes, which is how the serving API streams an attempt while it is generated.
"""
from __future__ import annotations

from pathlib import Path

import torch

from actors.engines.base import Generation, GenerationEngine, SamplingParams, TokenSink


class TransformersEngine(GenerationEngine):
    def __init__(self, model, tokenizer, device: str = "cpu"):
        self.tokenizer = tokenizer
        self.model = model.to(device).eval()
        self.device = device
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        self.version = 0

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "cpu") -> "TransformersEngine":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return cls(AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir), device)

    def update_weights(self, version: int, state_dict: dict) -> None:
        self.model.load_state_dict(state_dict, strict=True)
        self.version = version

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 on_tokens: TokenSink | None = None) -> list[Generation]:
        if not prompts:
            return []
        gen = torch.Generator(device=self.device)
        gen.manual_seed(params.seed if params.seed is not None else torch.seed())
        n, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding keeps every row's next token at the end
            ids[i, width - len(p) :] = torch.tensor(p)
            attn[i, width - len(p) :] = 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)

        out_tokens = torch.full((n, params.max_new_tokens), self.pad_id, dtype=torch.long)
        out_logprobs = torch.zeros((n, params.max_new_tokens))
        done = torch.zeros(n, dtype=torch.bool)
        steps = 0
        past, step_ids, step_pos = None, ids, positions
        for t in range(params.max_new_tokens):
            out = self.model(
                input_ids=step_ids, attention_mask=attn, position_ids=step_pos, past_key_values=past, use_cache=True
            )
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            if params.temperature > 0:
                logp = torch.log_softmax(logits / params.temperature, dim=-1)
                if params.top_p < 1.0:
                    logp = _nucleus(logp, params.top_p)
                token = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
            else:
                logp = torch.log_softmax(logits, dim=-1)
                token = logits.argmax(-1)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            out_tokens[:, t] = token.cpu()
            out_logprobs[:, t] = logp.gather(-1, token[:, None]).squeeze(-1).cpu()
            steps = t + 1
            if on_tokens is not None:  # the rows still generating: a finished row's pad is no token of its own
                for i, tok in zip((~done).nonzero().flatten().tolist(), token[~done].tolist()):
                    on_tokens(i, [tok])
            done |= token == self.eos_id
            if done.all():
                break
            step_ids = token[:, None]
            step_pos = step_pos[:, -1:] + 1
            attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=attn.device)], dim=1)

        results = []
        for i in range(n):
            toks = out_tokens[i, :steps].tolist()
            if self.eos_id in toks:
                cut, reason = toks.index(self.eos_id) + 1, "stop"
            else:
                cut, reason = len(toks), "length"
            results.append(Generation(toks[:cut], out_logprobs[i, :cut].tolist(), reason))
        return results


def _nucleus(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches `top_p` (the most
    likely token always stays), renormalised: the distribution sampled from, so the log-probs
    stay those of what was drawn. The same rule as vLLM's top-p sampler."""
    sorted_logp, order = logp.sort(dim=-1, descending=True)
    mass_before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()
    drop = torch.zeros_like(logp, dtype=torch.bool).scatter(-1, order, mass_before >= top_p)
    return torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)
