"""Streaming a request's last attempts while the engine generates them.

`Stream` carries what `SelfCorrection.run` reports (its `progress`) to the HTTP response: a choice's
earlier attempts when its last attempt begins, that attempt's tokens as each decoding step makes them
(from the engine's thread, inside a batch shared with other requests), then the finished choices or
the error. The events cross from that thread to the replica's event loop through the loop itself
(call_soon_threadsafe), so they arrive in the order they were put.

`TextDeltas` turns a choice's growing token list into text deltas that never send what the finished
attempt's text will not hold: no half of a multi-byte character, nothing from a stop string on (the
last len(longest stop) - 1 characters wait until no stop string can begin in them), and the stop
found on the same token prefixes as SelfCorrection._attempt finds it.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from actors.serve.app import Choice, first_stop


@dataclass
class Begin:
    index: int
    earlier: Choice  # the attempts before the last, and the final truncation notes


@dataclass
class Tokens:
    index: int
    token_ids: list[int]


@dataclass
class End:
    choices: list[Choice] | None  # None when the run failed
    error: Exception | None = None


class Stream:
    """A streamed request's progress (app.Progress), put from any thread, read on the event loop that made it."""

    def __init__(self):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()

    def _put(self, event) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def begin(self, index: int, earlier: Choice) -> None:
        self._put(Begin(index, earlier))

    def tokens(self, index: int, token_ids: list[int]) -> None:
        self._put(Tokens(index, list(token_ids)))

    def end(self, choices: list[Choice]) -> None:
        self._put(End(choices))

    def fail(self, error: Exception) -> None:
        self._put(End(None, error))

    async def events(self) -> AsyncIterator[Begin | Tokens | End]:
        """Every event in order, up to and with the End."""
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, End):
                return


class TextDeltas:
    """One choice's last attempt as text deltas, token by token."""

    def __init__(self, decode: Callable[[list[int]], str], stop: list[str]):
        self._decode, self._stop = decode, stop
        self._hold = max((len(s) for s in stop), default=1) - 1  # a stop string may begin this near the end
        self._ids: list[int] = []
        self._stopped = False
        self.sent = ""

    def add(self, token_ids: list[int]) -> str:
        """The text these tokens add that is sure to be in the final text ("" when there is none yet)."""
        safe = self.sent
        for token in token_ids:  # one prefix at a time, as _attempt looks for the stop
            if self._stopped:
                break
            self._ids.append(token)
            text = self._decode(self._ids)
            if (cut := first_stop(text, self._stop)) is not None:
                safe, self._stopped = text[:cut], True
            else:
                safe = text[: len(text) - self._hold].rstrip("\ufffd")  # U+FFFD: a character's bytes still coming
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return ""
        delta, self.sent = safe[len(self.sent):], safe
        return delta

    def rest(self, final_text: str) -> str:
        """What the deltas have not sent of the finished attempt's text: the held-back end."""
        if not final_text.startswith(self.sent):  # decoding a prefix gave other text than the whole: should not happen
            raise RuntimeError(f"streamed {self.sent!r}, but the attempt's text is {final_text!r}")
        return final_text[len(self.sent):]
