"""Many long streams at once, as agents hold them: none waits for another to end."""

from __future__ import annotations

import asyncio
import resource

from gateway.cli.serve import _raise_open_file_limit
from gateway.policy.models import Deployment
from gateway.providers.openai_compatible import OpenAICompatibleProvider

STREAMS = 1_001  # one past the connection cap the provider had


async def test_a_thousand_and_one_streams_open_at_once() -> None:
    """The upstream sends each stream's first chunk and ends none until all have connected: a
    cap on the provider's connections would leave the last one waiting for ever."""
    _raise_open_file_limit()  # two sockets a stream, both ends in this process
    connected = 0
    all_in = asyncio.Event()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n"
    first = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    rest = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connected
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head % (len(first) + len(rest)) + first)
        connected += 1
        if connected == STREAMS:
            all_in.set()
        await all_in.wait()
        writer.write(rest)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0, backlog=STREAMS)
    port = server.sockets[0].getsockname()[1]
    deployment = Deployment(name="held", model="openai/held", api_base=f"http://127.0.0.1:{port}/v1")
    provider = OpenAICompatibleProvider()

    async def one() -> bytes:
        stream = await provider.open_stream(deployment, None, {"messages": [], "max_tokens": 2}, False)
        return b"".join([event async for event in stream.events])

    try:
        async with server:
            answers = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(STREAMS))), timeout=20)
    finally:
        await provider.aclose()
    assert connected == STREAMS
    assert all(answer.endswith(b"data: [DONE]\n\n") and b'"hi"' in answer for answer in answers)


def test_serve_takes_the_open_file_limit_the_administrator_allows() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        _raise_open_file_limit()
        # an unlimited hard limit is more than the kernel lets a soft one be: left as it was
        expected = (256, hard) if hard == resource.RLIM_INFINITY else (hard, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == expected
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
