"""Relaying an upstream stream to the client, and ending it honestly.

The client sees the upstream's events as they come. A stream that breaks, is malformed, ends
without ``[DONE]`` or outlives ``dispatch.max_stream_s`` ends with an error event (the headers
said 200 long ago); a client that leaves is a 499. Whatever happens, ``finish`` runs once:
the upstream connection is released and the request is settled and ledgered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import orjson

from gateway.clock import Clock
from gateway.providers.base import ProviderError, UpstreamStream

__all__ = ["Relay", "error_event"]

Finish = Callable[[UpstreamStream, int, str | None], Awaitable[None]]


def error_event(message: str, code: str) -> bytes:
    payload = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class Relay:
    def __init__(
        self,
        stream: UpstreamStream,
        finish: Finish,
        clock: Clock,
        max_s: float,
        on_first_event: Callable[[], None],
        held: list[bytes] | None = None,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """``held``: events read from the stream already (while escalation checked them), sent
        first; ``transform``: applied to every event on its way out."""
        self.stream = stream
        self._held = held or []
        self._transform = transform
        self._finish = finish
        self._clock = clock
        self._max_s = max_s
        self._on_first_event = on_first_event
        self._finished = False

    async def events(self) -> AsyncIterator[bytes]:
        status, error_type = 200, None
        deadline = self._clock.monotonic() + self._max_s
        first = True
        try:
            async for event in self._events():
                if first:
                    self._on_first_event()
                    first = False
                yield self._transform(event) if self._transform else event
                if self._clock.monotonic() > deadline:
                    status, error_type = 504, "stream_too_long"
                    yield error_event(f"the stream ran longer than {self._max_s:g}s and was ended", error_type)
                    break
            else:
                if self.stream.error == "malformed_stream":
                    status, error_type = 502, "malformed_stream"
                    yield error_event("the upstream sent a malformed stream chunk", error_type)
                elif not self.stream.done:
                    status, error_type = 502, "upstream_truncated"
                    yield error_event("the upstream stream ended before it was complete", error_type)
        except ProviderError as exc:
            status, error_type = 502, self.stream.error or type(exc).__name__
            yield error_event(f"the upstream stream broke off: {exc.public_message}", error_type)
        except BaseException:
            status, error_type = 499, "client_disconnected"  # nginx's code for "client closed request"
            raise
        finally:
            await self.finish(status, error_type)

    async def _events(self) -> AsyncIterator[bytes]:
        for event in self._held:
            yield event
        if not self.stream.done:
            async for event in self.stream.events:
                yield event

    async def finish(self, status: int, error_type: str | None) -> None:
        """Release the upstream and settle the request; only the first call counts."""
        if self._finished:
            return
        self._finished = True
        # Shielded: on a client disconnect this runs inside a cancelled scope, and the spend
        # must still be recorded and the upstream connection released.
        with anyio.CancelScope(shield=True):
            aclose = getattr(self.stream.events, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._finish(self.stream, status, error_type)
