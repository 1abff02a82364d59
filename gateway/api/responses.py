"""Response classes and request helpers shared by the endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.pipeline.relay import Relay

__all__ = ["SSEResponse", "client_host"]


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


class SSEResponse(StreamingResponse):
    """Server-sent events from a relay; a client that leaves before the first byte still ends
    the relay (Starlette never starts the body then), so the request is settled and ledgered.
    ``events``: the relay's events translated into another API's (default: as they are)."""

    def __init__(self, relay: Relay, headers: dict[str, str], events: AsyncIterator[bytes] | None = None) -> None:
        super().__init__(events or relay.events(), media_type="text/event-stream", headers=headers)
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # A client gone while the upstream was being reached: sending would be silently
            # dropped by the server and the stream would look delivered.
            if not await Request(scope, receive).is_disconnected():
                await super().__call__(scope, receive, send)
        finally:
            await self.relay.finish(499, "client_disconnected")
