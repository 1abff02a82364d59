"""A cheap OpenAI-compatible upstream for long streams: each stream sends one content chunk every
``--interval-ms`` (100: 10 chunks/s, as providers batch tokens into chunks) for ``max_tokens``
chunks, and each chunk's content is the time it left (``t`` + CLOCK_MONOTONIC in ns, a clock
every process on the machine shares), so a client reads per-chunk delay straight off the chunk.

Raw asyncio protocol, no HTTP framework: at thousands of open streams the mock's CPU per chunk
is what the gateway does not get on a shared machine, so it is kept to a write per chunk.

    python bench/stream_mock.py --port 9200 [--interval-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
PREFIX = b'data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"mock","choices":[{"index":0,"delta":{"content":"t'
SUFFIX = b'"},"finish_reason":null}]}\n\n'
TAIL = (
    b'data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"mock","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"mock","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}\n\n'
    b"data: [DONE]\n\n"
)
MODELS = json.dumps({"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "bench"}]}).encode()


def framed(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def json_response(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


class Upstream(asyncio.Protocol):
    interval_s = 0.1

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(head.split(" ", 2)[1], body)

    def answer(self, path: str, body: bytes) -> None:
        assert self.transport is not None
        if path.endswith("/models"):
            self.transport.write(json_response(MODELS))
            return
        request = json.loads(body or b"{}")
        chunks = max(1, int(request.get("max_tokens") or 5))
        if not request.get("stream"):
            answer = {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": 0,
                "model": "mock",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
            }
            self.transport.write(json_response(json.dumps(answer).encode()))
            return
        self.transport.write(HEAD)
        self.send(chunks, chunks)

    def send(self, left: int, total: int) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if left == 0:
            transport.write(framed(TAIL % (total, 12 + total)) + b"0\r\n\r\n")
            return
        transport.write(framed(PREFIX + b"%d" % time.monotonic_ns() + SUFFIX))
        self.loop.call_later(self.interval_s, self.send, left - 1, total)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, interval_s: float) -> None:
    Upstream.interval_s = interval_s
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9200)
    ap.add_argument("--interval-ms", type=float, default=100.0)
    args = ap.parse_args()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(args.port, args.interval_ms / 1000))


def loop_factory() -> Any:
    """uvloop where installed (uvicorn's standard extra brings it): cheaper per write."""
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return None


if __name__ == "__main__":
    main()
