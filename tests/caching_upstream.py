"""A loopback upstream that answers as Anthropic's Messages API and OpenAI's chat API do, each with
its provider's prompt caching and usage counting.

OpenAI (platform.openai.com, "Prompt caching"): automatic for prompts of 1,024 tokens or more, in
increments of 128 tokens of the longest prefix seen before; ``prompt_tokens`` includes the
``prompt_tokens_details.cached_tokens``.

Caching follows Anthropic's documented rules (docs.anthropic.com, "Prompt caching"): the prefix
is tools, then system, then messages, in that order; a block with ``cache_control`` marks the end
of a cacheable prefix; at most 4 such blocks (more is a 400); a request reads the longest prefix
written before that ends at one of its breakpoints or up to 20 blocks before one, and writes the
prefix up to each of its breakpoints past what it read. The ``cache_control`` markers themselves
are not part of a prefix. Usage counts as
Anthropic's does: ``input_tokens`` is only what came after the last breakpoint, beside
``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (split by TTL in
``cache_creation``). A token here is 4 characters of the block's JSON.

Each model has its own cache (a prefix another model cached is not read). A cached prefix lives ``ttl_s`` (5 minutes, Anthropic's default and OpenAI's usual) past its last
use, or an hour when written with ``ttl: 1h``; ``clock`` is injectable for benchmarks that compress time.

With tools and a last user turn that is not a tool result, it calls the first tool; otherwise it
answers in text; with ``thinking`` it thinks first (a signed thinking block). ``requests`` keeps every body as received, for tests to read.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["CachingUpstream"]

# Anthropic checks for a cached prefix at each breakpoint and at the block boundaries up to about
# 20 blocks before it ("Prompt caching": automatic prefix checking).
LOOKBACK = 20


def _tokens(block: Any) -> int:
    return max(1, math.ceil(len(orjson.dumps(block)) / 4))


def _mark(block: Any) -> dict[str, Any]:
    """A block's cache_control; a tool result's may be on its last inner block."""
    if not isinstance(block, dict):
        return {}
    inner = block.get("content") if block.get("type") == "tool_result" else None
    if isinstance(inner, list) and inner and isinstance(inner[-1], dict) and inner[-1].get("cache_control"):
        return dict(inner[-1]["cache_control"])
    return dict(block.get("cache_control") or {})


def _unmarked(block: Any) -> Any:
    """A block as the cache keys it: a breakpoint marks where a prefix ends, it is not part of it
    (so a breakpoint that moves forward each turn still reads what the last turn wrote)."""
    if not isinstance(block, dict):
        return block
    out = {k: v for k, v in block.items() if k != "cache_control"}
    if out.get("type") == "tool_result" and isinstance(out.get("content"), list):
        out["content"] = [_unmarked(b) for b in out["content"]]
    return out


def _blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt as Anthropic caches it: tools, system blocks, then every message's blocks."""
    out: list[dict[str, Any]] = list(body.get("tools") or [])
    system = body.get("system")
    out += [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    for message in body.get("messages") or []:
        content = message.get("content")
        out += [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    return out


class CachingUpstream:
    def __init__(self, ttl_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = ""  # set by whoever serves ``app``
        self.requests: list[dict[str, Any]] = []
        self.usage_log: list[dict[str, Any]] = []  # the usage of every answer, as billed
        self.billed: list[tuple[str, dict[str, Any]]] = []  # (model, usage) of every answer
        self.cache: dict[bytes, tuple[float, float]] = {}  # prefix bytes -> (expiry, ttl)
        self.ttl_s = ttl_s
        self.clock = clock
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    def hit(self, key: bytes) -> bool:
        """A live cached prefix; using it renews its lifetime."""
        found = self.cache.get(key)
        if found is None or found[0] <= self.clock():
            return False
        self.cache[key] = (self.clock() + found[1], found[1])
        return True

    def write(self, key: bytes, ttl_s: float | None = None) -> None:
        ttl = ttl_s or self.ttl_s
        self.cache[key] = (self.clock() + ttl, ttl)

    # -- OpenAI -----------------------------------------------------------------------------
    def openai_usage(self, body: dict[str, Any], completion: int) -> dict[str, Any]:
        messages = body.get("messages") or []
        sizes = [_tokens(m) for m in messages]
        cached = 0
        for end in range(1, len(messages) + 1):
            key = orjson.dumps(["openai", body.get("model"), messages[:end]])
            prefix = sum(sizes[:end])
            if self.hit(key) and prefix >= 1024:
                cached = prefix // 128 * 128
            else:
                self.write(key)
        prompt = sum(sizes)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(body)
        text = "Done: the tests pass."
        usage = self.openai_usage(body, _tokens(text))
        self.usage_log.append(usage)
        self.billed.append((str(body.get("model", "")), usage))
        base = {"id": f"chatcmpl-{len(self.requests)}", "created": 0, "model": body.get("model", "")}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            return JSONResponse({**base, "object": "chat.completion", "choices": [choice], "usage": usage})

        async def chunks() -> AsyncIterator[bytes]:
            def chunk(choices: list[Any], **extra: Any) -> bytes:
                data = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
                return b"data: " + orjson.dumps(data) + b"\n\n"

            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}])
            yield chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            yield chunk([], usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    # -- Anthropic --------------------------------------------------------------------------

    def usage(self, body: dict[str, Any]) -> dict[str, Any] | str:
        marked = _blocks(body)
        marks = [i for i, b in enumerate(marked) if _mark(b)]
        if len(marks) > 4:
            return f"A maximum of 4 blocks with cache_control may be provided. Found {len(marks)}."
        blocks = [_unmarked(b) for b in marked]
        sizes = [_tokens(b) for b in blocks]

        def key(end: int) -> bytes:
            return orjson.dumps(["anthropic", body.get("model"), blocks[:end]])

        read_end = 0
        for mark in marks:  # the breakpoint's own prefix first, then each shorter one in the lookback
            for end in range(mark + 1, max(mark + 1 - LOOKBACK, 0), -1):
                if end > read_end and self.hit(key(end)):
                    read_end = end
                    break
        write_end = marks[-1] + 1 if marks else 0
        one_hour = 0
        for end in marks:
            if end + 1 > read_end:
                hour = _mark(marked[end]).get("ttl") == "1h"
                self.write(key(end + 1), 3600.0 if hour else None)
                if hour:
                    one_hour = sum(sizes[read_end : end + 1])
        read = sum(sizes[:read_end])
        written = sum(sizes[read_end:write_end]) if write_end > read_end else 0
        one_hour = min(one_hour, written)
        return {
            "input_tokens": sum(sizes) - read - written,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
            "cache_creation": {"ephemeral_5m_input_tokens": written - one_hour, "ephemeral_1h_input_tokens": one_hour},
        }

    async def _messages(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(body)
        usage = self.usage(body)
        if isinstance(usage, str):
            return JSONResponse({"type": "error", "error": {"type": "invalid_request_error", "message": usage}}, 400)
        last = (body.get("messages") or [{}])[-1]
        content = last.get("content")
        answered = isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)
        tools = body.get("tools") or []
        if tools and not answered:
            block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{len(self.requests)}", "name": tools[0]["name"]}
            block["input"] = {"path": "main.py"}
            stop = "tool_use"
        else:
            block, stop = {"type": "text", "text": "Done: the tests pass."}, "end_turn"
        blocks = [block]
        if body.get("thinking"):
            thought = {
                "type": "thinking",
                "thinking": "The test fails in main.py.",
                "signature": f"sig-{len(self.requests)}",
            }
            blocks.insert(0, thought)
        usage["output_tokens"] = sum(_tokens(b) for b in blocks)
        self.usage_log.append(usage)
        self.billed.append((str(body.get("model", "")), usage))
        message = {
            "id": f"msg_up_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return JSONResponse(message)
        return StreamingResponse(self._events(message), media_type="text/event-stream")

    @staticmethod
    async def _events(message: dict[str, Any]) -> AsyncIterator[bytes]:
        def event(kind: str, data: dict[str, Any]) -> bytes:
            return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"

        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        yield event("message_start", {"message": start})
        for i, block in enumerate(message["content"]):
            if block["type"] == "thinking":
                empty = {"type": "thinking", "thinking": "", "signature": ""}
                yield event("content_block_start", {"index": i, "content_block": empty})
                thought = {"type": "thinking_delta", "thinking": block["thinking"]}
                yield event("content_block_delta", {"index": i, "delta": thought})
                signed = {"type": "signature_delta", "signature": block["signature"]}
                yield event("content_block_delta", {"index": i, "delta": signed})
            elif block["type"] == "text":
                yield event("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
                yield event("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": block["text"]}})
            else:
                yield event("content_block_start", {"index": i, "content_block": {**block, "input": {}}})
                delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}
                yield event("content_block_delta", {"index": i, "delta": delta})
            yield event("content_block_stop", {"index": i})
        # As Anthropic's API does today, message_delta repeats the input counts beside the output.
        yield event("message_delta", {"delta": {"stop_reason": message["stop_reason"]}, "usage": usage})
        yield event("message_stop", {})
