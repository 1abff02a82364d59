"""Streams in another API's events: the relay's chat chunks, translated as they pass."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol, cast

from gateway.api.sse import SSEResponse
from gateway.pipeline import StreamAnswer
from gateway.pipeline.relay import Relay

__all__ = ["Translator", "translated_sse"]


class Translator(Protocol):
    def start(self) -> list[bytes]: ...

    def feed(self, raw: bytes) -> list[bytes]: ...


def translated_sse(answer: StreamAnswer, translator: Translator) -> SSEResponse:
    return SSEResponse(answer.relay, answer.headers, _translated(answer.relay, translator))


async def _translated(relay: Relay, translator: Translator) -> AsyncIterator[bytes]:
    for event in translator.start():
        yield event
    # aclosing: a client that leaves closes the relay's iterator now, which settles the request.
    async with contextlib.aclosing(cast(AsyncGenerator[bytes, None], relay.events())) as events:
        async for raw in events:
            for event in translator.feed(raw):
                yield event
