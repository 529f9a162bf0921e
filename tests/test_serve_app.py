"""The serving logic without Serve: `SelfCorrection` over a real transformers engine on the untrained tiny
model (tests/test_serve.py runs it behind real HTTP). What HTTP cannot reach cheaply: an attempt left out
because its prompt fills the context, how a batch of engine calls is grouped and handed back, what a
streamed request hears and in what order, and stop strings in a stream."""
from __future__ import annotations

import asyncio
import json

import pytest

from actors.engines import Generation, SamplingParams
from actors.serve import responses
from actors.serve.app import EngineCall, SelfCorrection
from actors.serve.checkpoint import resolve
from actors.serve.protocol import APIError, Prompt
from actors.serve.streaming import Begin, Stream, TextDeltas, Tokens


@pytest.fixture(scope="module")
def impl(tiny_model_dir):
    return SelfCorrection.load(resolve(tiny_model_dir), "transformers", max_attempts=3)


async def generate_alone(impl, prompts, params, key, on_tokens=None):
    return (await asyncio.to_thread(impl.generate_batch, [EngineCall(prompts, params, key, on_tokens)]))[0]


def arguments(impl, **kwargs) -> dict:
    return dict(n=1, attempts=2, max_tokens=None, temperature=0.0, top_p=1.0, seed=None, stop=[],
                generate=lambda *call: generate_alone(impl, *call)) | kwargs


def run(impl, x1, **kwargs):
    return asyncio.run(impl.run([x1], **arguments(impl, **kwargs)))


def streamed(impl, x1s, **kwargs) -> tuple[list, list]:
    """A streamed run: the events its Stream carried, in order, and the chunks responses.chunks made of them."""
    async def go():
        stream = Stream()
        choices = await impl.run(x1s, progress=stream, **arguments(impl, **kwargs))
        stream.end(choices)
        events = []
        async for event in stream.events():
            events.append(event)
        replay = Stream()  # the same events again, for the chunks
        for event in events:
            replay._put(event)
        chunks = [c async for c in responses.chunks("completion", "m", replay, impl.turns.text, kwargs.get("stop", []))]
        return events, chunks

    return asyncio.run(go())


def first_turn(impl, prompt: str, attempts: int = 2, max_tokens: int | None = None) -> list[int]:
    (x1,) = impl.check(impl.served.name, [Prompt("prompt", [("user", prompt)])], attempts, max_tokens)
    return x1


def test_an_attempt_whose_prompt_fills_the_context_is_not_run_and_says_so(impl):
    prompt = "sort: " + " ".join(["5"] * 240) + "\nanswer:"  # leaves a few tokens of room: a short test
    x1 = first_turn(impl, prompt, 3, 1)
    room = impl.served.context - len(x1)
    assert 0 < room < 40
    (choice,) = run(impl, x1, attempts=3, max_tokens=room)
    # the untrained model does not stop: attempt 1 fills the context, so attempts 2 and 3 have no room
    assert [a.finish_reason for a in choice.attempts] == ["length"] and len(choice.last.token_ids) == room
    second_prompt = len(impl.turns.second(x1, choice.last.token_ids))
    assert choice.truncated == [f"attempt 2 was not run: its prompt ({second_prompt} tokens) fills the model's "
                                f"context ({impl.served.context} tokens)"]


def test_a_prompt_longer_than_the_context_is_refused(impl):
    with pytest.raises(APIError, match=r"prompt: the prompt takes \d+ tokens, and this model's context is 512 tokens") as e:
        first_turn(impl, "sort: " + " ".join(["7"] * 400))
    assert e.value.status == 400 and e.value.param == "prompt" and e.value.code == "context_length_exceeded"


def test_a_batch_hands_every_item_its_own_generations(impl):
    """Items with equal params share one engine call; each gets back what it would have got alone (greedy)."""
    prompts = [impl.turns._encode(f"sort: {a} {b}\nanswer:") for a, b in ((3, 1), (9, 4), (7, 7), (2, 8))]
    short, long = SamplingParams(4, 0.0), SamplingParams(7, 0.0)
    items = [EngineCall([prompts[0]], short, None), EngineCall([prompts[1], prompts[2]], long, None),
             EngineCall([prompts[3]], short, None)]
    out = impl.generate_batch(items)
    assert [len(gens) for gens in out] == [1, 2, 1]
    for (item_prompts, params, _, _), gens in zip(items, out):
        alone = impl.engine.generate(item_prompts, params)
        assert [g.token_ids for g in gens] == [g.token_ids for g in alone]
        assert all(len(g.token_ids) <= params.max_new_tokens for g in gens)


def test_streamed_items_of_a_batch_hear_their_own_tokens_step_by_step(impl):
    """One engine call holds a streamed item, a silent one and another streamed one: each on_tokens hears
    its own prompts' tokens, which add up to their generations, and the two items' reports interleave
    step by step (the engine reports while it generates, not after)."""
    prompts = [impl.turns._encode(f"sort: {a} {b} {c}\nanswer:") for a, b, c in ((3, 1, 4), (1, 5, 9), (2, 6, 5))]
    heard: list[tuple[str, int, list[int]]] = []
    params = SamplingParams(12, 0.0)
    items = [EngineCall([prompts[0]], params, None, lambda j, ids: heard.append(("a", j, ids))),
             EngineCall([prompts[1]], params, None),
             EngineCall([prompts[2]], params, None, lambda j, ids: heard.append(("b", j, ids)))]
    out = impl.generate_batch(items)
    for name, gens in (("a", out[0]), ("b", out[2])):
        assert [t for who, j, ids in heard if who == name for t in ids] == gens[0].token_ids
        assert all(j == 0 and len(ids) == 1 for who, j, ids in heard if who == name)  # one token per step
    assert len(out[0][0].token_ids) == len(out[2][0].token_ids) == 12  # the untrained model does not stop
    assert [who for who, _, _ in heard] == ["a", "b"] * 12


def test_a_stream_begins_each_choice_then_sends_its_last_attempt_as_generated(impl):
    """n=2 over two prompts, sampled: each choice begins with its earlier attempts, then its last attempt's
    tokens, which add up to that attempt; the chunks' text is the attempt's, choice by choice."""
    x1s = [first_turn(impl, "sort: 4 2\nanswer:"), first_turn(impl, "sort: 9 7 8\nanswer:")]
    events, chunks = streamed(impl, x1s, n=2, attempts=2, max_tokens=6, temperature=1.0, seed=0)
    choices = events[-1].choices
    assert len(choices) == 4
    begins = [e for e in events if isinstance(e, Begin)]
    assert sorted(b.index for b in begins) == [0, 1, 2, 3]
    assert all(events.index(b) < min(events.index(t) for t in events if isinstance(t, Tokens) and t.index == b.index)
               for b in begins)
    for i, choice in enumerate(choices):
        (begin,) = [b for b in begins if b.index == i]
        assert begin.earlier.attempts == choice.attempts[:1]
        assert [t for e in events if isinstance(e, Tokens) and e.index == i for t in e.token_ids] == choice.last.token_ids
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert [a["text"] for a in mine[0]["self_correction"]["attempts"]] == [choice.attempts[0].text]
        assert "".join(c["text"] for c in mine) == choice.last.text and len(mine) > 3  # deltas, not one piece
        assert mine[-1]["finish_reason"] == "length" and len(mine[-1]["self_correction"]["attempts"]) == 2
    assert len({c.last.text for c in choices}) == 4  # four independent samples, none lost or repeated


def test_a_choice_whose_last_attempt_cannot_run_streams_the_one_before(impl):
    prompt = "sort: " + " ".join(["5"] * 240) + "\nanswer:"
    x1 = first_turn(impl, prompt, 3, 1)
    room = impl.served.context - len(x1)
    events, chunks = streamed(impl, [x1], attempts=3, max_tokens=room)
    (choice,) = events[-1].choices
    (begin,) = [e for e in events if isinstance(e, Begin)]
    assert begin.earlier.attempts == [] and begin.earlier.truncated == choice.truncated  # the note came first
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice.last.text


def test_text_deltas_hold_back_what_a_stop_string_may_take(impl):
    """Streamed with stop strings, the text is exactly the attempt's (cut before the first stop, as
    SelfCorrection._attempt cuts it), and nothing past the cut is ever sent."""
    ids = impl.turns._encode(" 12 34 56 78 90")
    for stop in ([" 56"], ["4 5", "7"], ["x"], []):
        deltas = TextDeltas(impl.turns.text, stop)
        sent = [deltas.add([t]) for t in ids]
        final = impl._attempt(Generation(ids, [0.0] * len(ids), "length"), stop).text
        assert "".join(sent) + deltas.rest(final) == final
        assert final.startswith("".join(sent))
        if not stop:
            assert all(sent), "with no stop strings every token's text goes at once"
    assert final == " 12 34 56 78 90"


def test_a_run_that_fails_mid_stream_ends_it_with_an_error_event(impl):
    """The stream has begun (status 200 sent), so the failure is an SSE event in OpenAI's error shape,
    which the openai SDK raises, and the stream still ends with [DONE]."""
    from actors.serve.deployment import _sse

    async def failing(prompts, params, key, on_tokens=None):
        if on_tokens is not None:  # the last attempt: the first chunk is out by now
            raise RuntimeError("engine died")
        return await generate_alone(impl, prompts, params, key)

    async def go():
        stream = Stream()

        async def produce():
            try:
                stream.end(await impl.run([first_turn(impl, "sort: 2 1\nanswer:")], progress=stream,
                                          **arguments(impl, generate=failing, max_tokens=3)))
            except Exception as exc:
                stream.fail(exc)

        task = asyncio.create_task(produce())
        chunks = responses.chunks("chat", "m", stream, impl.turns.text, [])
        events = [e async for e in _sse(chunks)]
        await task
        return events

    *data, done = asyncio.run(go())
    assert done == "data: [DONE]\n\n" and all(e.startswith("data: ") and e.endswith("\n\n") for e in data)
    first, error = [json.loads(e[len("data: "):]) for e in data]
    assert first["choices"][0]["delta"] == {"role": "assistant"}
    assert first["choices"][0]["self_correction"]["attempts"][0]["tokens"] == 3
    assert error == {"error": {"message": "internal error: RuntimeError: engine died", "type": "server_error",
                               "param": None, "code": None}}
