"""uvicorn's httptools protocol, writing a response's head and body to the socket together.

uvicorn writes the status line and headers as soon as the app sends ``http.response.start``, and
the body in a second write: two TCP segments for every answer, and on loopback two wake-ups of
the client. Here each write is held until the next one (then both leave in one write) or until
the event loop has run what is ready now, so a head never waits for a body that comes later
(a stream's first token).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol"]


class _PairedWrites:
    """The connection's transport as uvicorn's protocol sees it: consecutive writes go out in
    pairs; everything but ``write`` and ``close`` is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(self._held + data)
            self._held = None

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:  # asked on every request: not through __getattr__
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _PairedWrites(transport, self.loop)))
