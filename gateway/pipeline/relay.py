"""Relaying an upstream stream to the client, and ending it honestly.

The client sees the upstream's events as they come. A stream that breaks, is malformed, ends
without ``[DONE]`` or outlives ``dispatch.max_stream_s`` ends with an error event (the headers
said 200 long ago); a client that leaves is a 499. Whatever happens, ``finish`` runs once:
the upstream connection is released and the request is settled and ledgered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import orjson

from gateway.clock import Clock
from gateway.errors import UpstreamError
from gateway.providers.base import UpstreamStream

__all__ = ["Relay", "error_event"]

log = logging.getLogger("tierwise.pipeline")
# Why a provider stopped reading a stream before its end, in the client's words.
_BROKEN = {
    "malformed_stream": "the upstream sent a malformed stream chunk",
    "upstream_error": "the upstream reported an error mid-stream",
}

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
                if self.stream.error in _BROKEN:
                    status, error_type = 502, self.stream.error
                    yield error_event(_BROKEN[error_type], error_type)
                elif not self.stream.done:
                    status, error_type = 502, "upstream_truncated"
                    yield error_event("the upstream stream ended before it was complete", error_type)
        except UpstreamError as exc:
            status, error_type = 502, self.stream.error or exc.kind
            yield error_event(f"the upstream stream broke off: {exc.message}", error_type)
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
        """Release the upstream and settle the request; only the first call counts.

        Settlement runs as a task of its own, shielded: a client that leaves as the stream ends
        (many stop reading at ``[DONE]``) cancels the task relaying it while this may still be
        checking the answer or settling the budget, and neither an anyio scope nor the caller's
        cancellation may stop it halfway (the row unwritten, the reservation held)."""
        if self._finished:
            return
        self._finished = True
        settling = asyncio.ensure_future(self._settle(status, error_type))
        with anyio.CancelScope(shield=True):
            try:
                await asyncio.shield(settling)
            except asyncio.CancelledError:
                settling.add_done_callback(_report)  # its caller is gone: an error is logged, not lost
                raise

    async def _settle(self, status: int, error_type: str | None) -> None:
        aclose = getattr(self.stream.events, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._finish(self.stream, status, error_type)


def _report(settling: asyncio.Future[None]) -> None:
    """A settlement whose caller was cancelled: its error, if any, in the log."""
    if not settling.cancelled() and (exc := settling.exception()) is not None:
        log.error("settling a stream failed", exc_info=exc)
