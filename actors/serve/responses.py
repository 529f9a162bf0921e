"""Response bodies in OpenAI's shapes, whole or as stream chunks, for completions and chat.

Each choice carries the extension `self_correction`: {"attempts": [{"text", "finish_reason",
"tokens"}, ...] first to last, "truncated": [why an attempt was cut or left out to fit the context]}.
Its text (or message content) and finish_reason are the last attempt's.

Streaming sends each choice's last attempt as text deltas while the engine generates it (one
delta per decoding step that adds text; see actors/serve/streaming.py). The earlier attempts go
whole in the `self_correction` of the choice's first chunk, sent when its last attempt begins; the
choice's closing chunk, after its last attempt, carries its finish_reason and its full
`self_correction`. Choices' chunks interleave, told apart by `index`, as OpenAI's do.
"""
from __future__ import annotations

import time
import uuid
from typing import AsyncIterator, Callable, Literal

from actors.serve.app import Choice
from actors.serve.streaming import Begin, Stream, TextDeltas, Tokens

Kind = Literal["completion", "chat"]


def _envelope(kind: Kind, chunk: bool, model: str, request_id: str, created: int) -> dict:
    objects = {("completion", False): "text_completion", ("completion", True): "text_completion",
               ("chat", False): "chat.completion", ("chat", True): "chat.completion.chunk"}
    return {"id": request_id, "object": objects[(kind, chunk)], "created": created, "model": model}


def new_id(kind: Kind) -> tuple[str, int]:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())


def body(kind: Kind, model: str, choices: list[Choice], prompt_tokens: int, token_ids: bool = False) -> dict:
    """The whole response. usage counts the prompts once and every attempt's generated tokens."""
    request_id, created = new_id(kind)
    out = []
    for index, choice in enumerate(choices):
        last = choice.last
        content = {"text": last.text} if kind == "completion" else {"message": {"role": "assistant", "content": last.text}}
        out.append({"index": index, **content, "finish_reason": last.finish_reason, "logprobs": None,
                    "self_correction": choice.self_correction(token_ids=token_ids)})
    completion_tokens = sum(a.generated for c in choices for a in c.attempts)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    return {**_envelope(kind, False, model, request_id, created), "choices": out, "usage": usage}


async def chunks(kind: Kind, model: str, stream: Stream, decode: Callable[[list[int]], str], stop: list[str],
                 token_ids: bool = False) -> AsyncIterator[dict]:
    """The stream, as `stream`'s events come: per choice, a first chunk with the earlier attempts, the
    last attempt's text as deltas while it is generated, and a closing chunk with finish_reason.
    A failed run raises its error here, after what was sent."""
    request_id, created = new_id(kind)
    envelope = _envelope(kind, True, model, request_id, created)

    def chunk(index: int, text: str, finish_reason: str | None, first: bool = False, **extra) -> dict:
        if kind == "completion":
            content = {"text": text}
        else:
            content = {"delta": ({"role": "assistant"} if first else {}) | ({"content": text} if text else {})}
        return {**envelope, "choices": [{"index": index, **content, "finish_reason": finish_reason, "logprobs": None, **extra}]}

    deltas: dict[int, TextDeltas] = {}
    async for event in stream.events():
        if isinstance(event, Begin):
            deltas[event.index] = TextDeltas(decode, stop)
            yield chunk(event.index, "", None, first=True, self_correction=event.earlier.self_correction(token_ids=token_ids))
        elif isinstance(event, Tokens):
            if text := deltas[event.index].add(event.token_ids):
                yield chunk(event.index, text, None)
        elif event.error is not None:
            raise event.error
        else:
            for index, choice in enumerate(event.choices):
                if rest := deltas[index].rest(choice.last.text):  # what a stop string's look-ahead held back
                    yield chunk(index, rest, None)
                yield chunk(index, "", choice.last.finish_reason, self_correction=choice.self_correction(token_ids=token_ids))
