"""uvicorn's httptools protocol, writing a response's head and body to the socket together.

uvicorn writes the status line and headers as soon as the app sends ``http.response.start``, and
the body in a second write: two TCP segments for every answer, and on loopback two wake-ups of
the client. Here a head is held until the next write (then both leave in one write) or until
the event loop has run what is ready now, so a head never waits for a body that comes later
(a stream's first token). Everything else is written at once: a body whose head has left is a
stream's, and its chunks are due as they come. (A body that happened to begin with ``HTTP/``
would be held too: one loop iteration later, in order.)
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol"]


class _PairedWrites:
    """The connection's transport as uvicorn's protocol sees it: a head and the write after it go
    out together. Whatever writes or ends the stream goes through here (so nothing can overtake a
    held head); everything else is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._transport.write(self._held + data)
            self._held = None
        elif data.startswith(b"HTTP/"):  # a response's head: its body may be on its way
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:  # a stream's chunk: out now (held, each one cost a callback and a loop iteration)
            self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def writelines(self, list_of_data: Any) -> None:  # every write goes behind a held head
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:  # the connection is dropped: a held head goes nowhere, as buffered bytes do
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:  # asked on every request: not through __getattr__
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _PairedWrites(transport, self.loop)))
