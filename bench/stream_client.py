"""Load generator for long streams (its own process): opens ``--streams`` chat streams at
``--start-rate`` a second (open loop: a slow gateway does not slow the starts), reads every chunk
and takes its delay from the time the mock wrote into it (bench/stream_mock.py), on the clock
every process shares.

Raw asyncio protocol and a minimal HTTP/1.1 reader (status, headers, chunked or close-delimited
body): at thousands of streams an HTTP client library's per-chunk cost would be most of what the
machine's two cores spend. Prints one JSON object.

    python bench/stream_client.py --host 127.0.0.1 --port P --path /v1/chat/completions \
        --streams 1000 --chunks 200 [--start-rate 250] [--header NAME:VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import time
from array import array
from typing import Any

from stream_mock import loop_factory

STAMP = re.compile(rb'"t(\d{6,20})"')
DONE = b"data: [DONE]"


class Stream(asyncio.Protocol):
    """One request and its answer. ``delays_ns`` gets each content chunk's delay but the first
    (whose wait includes the gateway's routing and the upstream's connect: that is TTFT)."""

    def __init__(self, request: bytes, delays_ns: array[int], started_ns: int) -> None:
        self.request = request
        self.delays_ns = delays_ns
        self.started_ns = started_ns
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.head = b""
        self.status = 0
        self.chunked = False
        self.raw = b""  # body bytes not yet de-chunked
        self.text = b""  # de-chunked bytes not yet scanned
        self.chunks = 0
        self.ttft_ns: int | None = None
        self.done = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].lower(), self.head[end + 4 :]
            self.status = int(head.split(b" ", 2)[1])
            self.chunked = b"transfer-encoding: chunked" in head
        if self.chunked:
            self.raw += data
            data = self._dechunk()
        self._scan(data)

    def _dechunk(self) -> bytes:
        out = []
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self.raw[:line_end].split(b";")[0], 16)
            if size == 0:  # the body's end: a server may keep the connection open regardless
                self.raw = b""
                self.transport.close()
                break
            if len(self.raw) < line_end + 2 + size + 2:
                break
            out.append(self.raw[line_end + 2 : line_end + 2 + size])
            self.raw = self.raw[line_end + 4 + size :]
        return b"".join(out)

    def _scan(self, data: bytes) -> None:
        now = time.monotonic_ns()
        text = self.text + data
        cut = text.rfind(b"\n\n") + 2  # scan whole events only
        events, self.text = text[:cut], text[cut:]
        for stamp in STAMP.findall(events):
            if self.chunks == 0:
                self.ttft_ns = now - self.started_ns
            else:
                self.delays_ns.append(now - int(stamp))
            self.chunks += 1
        if DONE in events:
            self.done = True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(type(exc).__name__ if exc else "closed")


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json", "connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def pct(values: array[int] | list[int], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p * len(s) + 0.5) - 1))] / 1e6


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    headers = {"authorization": f"Bearer {args.key}", **dict(h.split(":", 1) for h in args.header)}
    body = json.dumps(
        {
            "model": args.model,
            "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": args.chunks,
            "stream": True,
        }
    ).encode()
    request = request_bytes(args.host, args.port, args.path, body, headers)
    delays: array[int] = array("q")
    outcomes: collections.Counter[str] = collections.Counter()
    ttfts: list[int] = []
    received = 0

    async def one(at: float) -> None:
        nonlocal received
        await asyncio.sleep(max(0.0, at - loop.time()))
        stream = Stream(request, delays, time.monotonic_ns())
        try:
            await loop.create_connection(lambda: stream, args.host, args.port)
            await asyncio.wait_for(asyncio.shield(stream.ended), args.timeout)
        except (OSError, TimeoutError) as exc:
            outcomes[type(exc).__name__] += 1
            return
        received += stream.chunks
        if stream.ttft_ns is not None:
            ttfts.append(stream.ttft_ns)
        if stream.status == 0:
            outcomes["closed before a status line"] += 1
        elif stream.status != 200:
            outcomes[f"HTTP {stream.status}"] += 1
        elif not stream.done or stream.chunks < args.chunks:
            outcomes["cut short"] += 1
        else:
            outcomes["ok"] += 1

    start = loop.time() + 0.05
    await asyncio.gather(*(one(start + i / args.start_rate) for i in range(args.streams)))
    return {
        "streams": args.streams,
        "ok": outcomes["ok"],
        "failed": args.streams - outcomes["ok"],
        "outcomes": dict(outcomes),
        "chunks": received,
        "chunk_p50_ms": pct(delays, 0.5),
        "chunk_p99_ms": pct(delays, 0.99),
        "chunk_max_ms": pct(delays, 1.0),
        "ttft_p50_ms": pct(ttfts, 0.5),
        "ttft_p99_ms": pct(ttfts, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--model", default="mock")
    ap.add_argument("--key", default="sk-bench")
    ap.add_argument("--header", action="append", default=[], help="NAME:VALUE, sent with every request")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--chunks", type=int, default=200, help="content chunks per stream (the mock sends 10 a second)")
    ap.add_argument("--start-rate", type=float, default=250.0, help="streams opened per second")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a stream may take in all")
    args = ap.parse_args()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        print(json.dumps(runner.run(run(args))))


if __name__ == "__main__":
    main()
