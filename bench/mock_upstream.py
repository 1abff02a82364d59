"""A fast mock OpenAI-compatible upstream for benchmarks: fixed small answers, optional fixed
latency, streaming with a usage chunk. Raw ASGI, so the mock is never the bottleneck.

A stream carries one content chunk per requested token (``max_tokens``, 5 when absent):
every gateway forwards ``max_tokens`` unchanged, so a client picks the stream length through
any of them. The first content chunk comes alone, then a pause (``--first-token-gap-ms``, as a
model takes a while for its second token), then the rest back to back: the burst makes a
gateway's per-chunk relay cost show in the time from first to last token, and the pause keeps
that burst (a core's worth of work for the mock and the gateway on a 2-core machine) out of
the time to the first token.

    python bench/mock_upstream.py --port 9100 [--latency-ms 50] [--first-token-gap-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
from typing import Any

import uvicorn

BODY = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": "mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the mock upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
).encode()


def _chunk(content: str | None, finish: str | None = None, usage: bool = False) -> bytes:
    payload: dict[str, Any] = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock"}
    payload["choices"] = (
        [] if usage else [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]
    )
    if usage:
        payload["usage"] = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


TAIL = [_chunk(None, "stop"), _chunk(None, usage=True), b"data: [DONE]\n\n"]
WORDS = ("Hello", " from", " the", " mock", " upstream.")
MAX_CHUNKS = 4096


@functools.lru_cache(maxsize=64)
def stream_events(n: int) -> list[bytes]:
    return [_chunk(WORDS[i % len(WORDS)]) for i in range(n)] + TAIL


def requested_chunks(body: bytes) -> int | None:
    """How many content chunks to stream (None: not a stream request)."""
    if b'"stream"' not in body:
        return None
    req = json.loads(body)
    if req.get("stream") is not True:
        return None
    return max(1, min(MAX_CHUNKS, int(req.get("max_tokens") or len(WORDS))))


MODELS = json.dumps(
    {"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "bench"}]}
).encode()


def make_app(latency_s: float, first_token_gap_s: float) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        if scope["path"].endswith("/models"):
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": MODELS})
            return
        if latency_s:
            await asyncio.sleep(latency_s)
        chunks = requested_chunks(body)
        if chunks is not None:
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            first, *rest = stream_events(chunks)
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await asyncio.sleep(first_token_gap_s)
            for piece in rest:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": BODY})

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--first-token-gap-ms", type=float, default=5.0)
    args = ap.parse_args()
    app = make_app(args.latency_ms / 1000, args.first_token_gap_ms / 1000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
