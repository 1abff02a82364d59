"""What `tierwise serve` writes to a client's socket: uvicorn's protocol, with a response's head
and body in one write, and never a head held back while a stream waits for its first token."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.cli import serve
from gateway.cli.http_protocol import CoalescingHttpToolsProtocol, _PairedWrites

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class RecordingTransport(asyncio.Transport):
    """The socket's side: what was written and when it was closed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[bytes | str] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.events.append(bytes(data))

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    def is_closing(self) -> bool:
        return "close" in self.events

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """One client connection to ``app`` through the protocol `tierwise serve` runs, on a private loop."""

    def __init__(self, app: App) -> None:
        self.loop = asyncio.new_event_loop()
        config = uvicorn.Config(app, http=CoalescingHttpToolsProtocol, lifespan="off", log_level="warning")
        self.state = ServerState()
        self.protocol = CoalescingHttpToolsProtocol(
            config=config, server_state=self.state, app_state={}, _loop=self.loop
        )
        self.transport = RecordingTransport()
        self.protocol.connection_made(self.transport)

    def request(self, raw: bytes) -> None:
        self.protocol.data_received(raw)

    def run_ready(self) -> None:
        """Let the loop run everything that is ready now (and what that schedules at once)."""
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))

    def finish(self) -> list[bytes | str]:
        async def served() -> None:
            await asyncio.gather(*self.state.tasks)

        self.loop.run_until_complete(served())
        self.run_ready()
        self.loop.close()
        return self.transport.events


GET = b"GET /v1/models HTTP/1.1\r\nhost: gateway\r\n\r\n"


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def test_a_response_leaves_in_one_write() -> None:
    conn = Connection(answer)
    conn.request(GET)
    [write] = conn.finish()
    assert isinstance(write, bytes)
    assert write.startswith(b"HTTP/1.1 200 OK\r\n")
    assert write.endswith(b'\r\n\r\n{"ok":true}')


def test_keep_alive_answers_each_request_in_one_write() -> None:
    conn = Connection(answer)
    conn.request(GET + GET)
    conn.run_ready()
    conn.request(GET)
    writes = conn.finish()
    assert len(writes) == 3
    assert all(isinstance(w, bytes) and w.startswith(b"HTTP/1.1 200") and w.endswith(b"}") for w in writes)


def test_a_stream_head_goes_out_before_its_first_token_arrives() -> None:
    first_token = asyncio.Event()
    rest = asyncio.Event()

    async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await first_token.wait()
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await rest.wait()
        for i in (2, 3, 4):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    conn = Connection(stream)
    conn.request(GET)
    conn.run_ready()
    [head] = conn.transport.events  # the model has not answered yet; the client has its headers
    assert isinstance(head, bytes)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"transfer-encoding: chunked\r\n\r\n")

    conn.loop.call_soon(first_token.set)
    conn.run_ready()
    assert conn.transport.events[1:] == [b"9\r\ndata: 1\n\n\r\n"]  # a lone token is not held either

    conn.loop.call_soon(rest.set)
    writes = conn.finish()
    # each chunk leaves as it is sent (a loop iteration later cost every stream a callback a
    # chunk); every byte arrives, in order, and nothing after the last chunk
    assert writes[2:] == [b"9\r\ndata: 2\n\n\r\n", b"9\r\ndata: 3\n\n\r\n", b"9\r\ndata: 4\n\n\r\n", b"0\r\n\r\n"]


def test_a_held_head_is_written_before_the_connection_closes() -> None:
    conn = Connection(answer)
    conn.request(b"HEAD /v1/models HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
    head, closed = conn.finish()
    assert isinstance(head, bytes) and head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert closed == "close"


def test_nothing_overtakes_a_held_head() -> None:
    """Writes through any method the transport has leave after the head they follow."""
    body_sent = asyncio.Event()

    async def head_then_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        # (a server writing by writelines: not uvicorn today, but it would not know the head is held)
        conn.protocol.transport.writelines([b"ab", b"cd"])
        body_sent.set()

    conn = Connection(head_then_body)
    conn.request(GET)
    conn.loop.run_until_complete(body_sent.wait())
    first, *_ = conn.transport.events  # (then uvicorn closes: its app never ended the response)
    assert isinstance(first, bytes)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\nabcd")


def test_an_aborted_connection_drops_a_held_head() -> None:
    transport, loop = RecordingTransport(), asyncio.new_event_loop()
    paired = _PairedWrites(transport, loop)
    paired.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
    paired.abort()
    loop.run_until_complete(asyncio.sleep(0))  # the flush it had scheduled runs
    loop.close()
    assert transport.events == ["abort"]


def test_serve_uses_uvicorns_own_protocol_without_httptools(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve._http_protocol() is CoalescingHttpToolsProtocol
    for name in ("uvicorn.protocols.http.httptools_impl", "gateway.cli.http_protocol"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "httptools", None)  # ``import httptools`` raises ImportError
    assert serve._http_protocol() == "auto"
