"""The built-in fake provider (``fake/<behaviour>`` deployments): the fake upstream's app
(:mod:`gateway.providers.fake_upstream`) called in process, the behaviour picked by model name.

No socket, no server thread: the app is driven through ASGI directly, its body streamed as it
is sent, and its answers go through the same checks and accounting as an OpenAI-compatible
server's (``answer_of``, ``sse_events``), so a fake deployment behaves as that server would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import orjson

from gateway.chat_request import CHAT_FIELDS
from gateway.embeddings_request import EMBEDDING_FIELDS
from gateway.errors import UpstreamConnectError
from gateway.policy.models import Deployment
from gateway.providers.base import Completion, Provider, UpstreamStream
from gateway.providers.fake_upstream import create_fake_app
from gateway.providers.openai_compatible import answer_of, http_error, sse_events

__all__ = ["FakeProvider"]

_Message = MutableMapping[str, Any]


class FakeProvider(Provider):
    def __init__(self) -> None:
        self._app = create_fake_app()

    async def complete(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion:
        payload = {k: v for k, v in body.items() if k in CHAT_FIELDS} | {"model": deployment.upstream_model}
        reads, _ = await self._call("/v1/chat/completions", payload, api_key)
        return answer_of(b"".join([c async for c in reads]), "choices")

    async def embed(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion:
        payload = {k: v for k, v in body.items() if k in EMBEDDING_FIELDS} | {"model": deployment.upstream_model}
        reads, _ = await self._call("/v1/embeddings", payload, api_key)
        return answer_of(b"".join([c async for c in reads]), "data")

    async def open_stream(
        self, deployment: Deployment, api_key: str | None, body: dict[str, Any], include_usage: bool
    ) -> UpstreamStream:
        payload = {k: v for k, v in body.items() if k in CHAT_FIELDS} | {
            "model": deployment.upstream_model,
            "stream": True,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        }
        reads, app = await self._call("/v1/chat/completions", payload, api_key)
        stream = UpstreamStream(events=reads)
        stream.events = sse_events(reads, stream, include_usage, payload, lambda _: app.cancel())
        return stream

    async def _call(
        self, path: str, payload: dict[str, Any], api_key: str | None
    ) -> tuple[AsyncIterator[bytes], asyncio.Task[None]]:
        """POST ``payload`` to the app: its body as the app sends it (after a status below 400),
        and the app's task (cancelled when a stream is left)."""
        headers = [(b"content-type", b"application/json")]
        if api_key:
            headers.append((b"authorization", f"Bearer {api_key}".encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": ("fake", 80),
        }
        sent: asyncio.Queue[_Message | None] = asyncio.Queue()
        request = [{"type": "http.request", "body": orjson.dumps(payload), "more_body": False}]

        async def receive() -> _Message:
            if request:
                return request.pop()
            await asyncio.Event().wait()  # the caller never leaves: a disconnect is a cancellation
            raise AssertionError("unreachable")

        async def send(message: _Message) -> None:
            sent.put_nowait(message)

        app = asyncio.create_task(self._app(scope, receive, send))
        app.add_done_callback(lambda _: sent.put_nowait(None))
        start = await sent.get()
        if start is None:
            raise UpstreamConnectError(f"the fake upstream failed: {app.exception()!r}")
        reads = _body(sent, app)
        if start["status"] >= 400:
            content = b"".join([c async for c in reads])
            given = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
            raise http_error(start["status"], None, content, api_key, given.get("retry-after"))
        return reads, app


async def _body(sent: asyncio.Queue[_Message | None], app: asyncio.Task[None]) -> AsyncIterator[bytes]:
    try:
        while (message := await sent.get()) is not None:
            if message["type"] == "http.response.body":
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return
        raise UpstreamConnectError("the fake upstream stopped mid-answer")
    finally:
        if not app.done():
            app.cancel()
