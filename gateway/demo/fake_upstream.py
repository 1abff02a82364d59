"""The built-in fake provider: a real OpenAI-compatible HTTP app whose behaviour is picked
by model name, for tests, demos and benchmarks with no network.

Models (prefix ``fake/`` in a policy):

    echo                   replies "[fake echo] <last user message>"
    fixed                  a fixed reply
    slow, slow-<ms>        echo after a delay (default 2000 ms)
    error-500              HTTP 500
    rate-limited-429[-<s>] HTTP 429 with Retry-After (default 1 s)
    flaky                  every other call fails with 500, starting with the first
    malformed-stream       a stream whose second chunk is not JSON (non-stream: invalid JSON)
    never-ending-stream    a stream that never finishes

Every reply is marked as fake, so nobody mistakes it for a model's answer. Tools,
``response_format``, ``n`` and ``stop`` are honoured so passthrough can be tested: given tools,
the fake calls the first (or the one ``tool_choice`` names), and once the last message is that
tool's result it answers "[fake tool result] <result>".
``POST /v1/embeddings`` returns deterministic unit vectors (seeded by a hash of model and text;
``dimensions`` and ``encoding_format: base64`` honoured; model ``error-500`` fails).
``POST /v1/messages`` answers the same way in Anthropic's Messages format, so deployments
served through litellm (``anthropic/...`` with this server as ``api_base``) can be tested.
``GET /stats`` returns how many completions each model served, the last request seen and
every request's method, path, headers and body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import math
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.chat_request import message_text

__all__ = ["FAKE_MODELS", "create_fake_app"]

FAKE_MODELS = (
    "echo",
    "fixed",
    "slow",
    "error-500",
    "rate-limited-429",
    "flaky",
    "malformed-stream",
    "never-ending-stream",
)
FIXED_REPLY = "[fake] This is a fixed reply from the Tierwise fake provider."


def _count(text: str) -> int:
    return max(1, len(text.split()))


class _FakeState:
    def __init__(self) -> None:
        self.served: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.last_request: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []

    def seen(self, request: Request, body: Any) -> None:
        self.last_request = {"body": body, "headers": dict(request.headers)}
        self.requests.append(
            {"method": request.method, "path": request.url.path, "headers": dict(request.headers), "body": body}
        )
        del self.requests[:-1000]
        self.ids = itertools.count(1)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "fake_error", "param": None, "code": str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


def _reply_for(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
    """The content (or tool calls) the fake answers with."""
    messages = body.get("messages") or []
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
    text = message_text(last_user.get("content"))
    model = str(body.get("model", ""))
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        return f"[fake tool result] {message_text(last.get('content'))}", None
    tools = body.get("tools")
    if tools and body.get("tool_choice") != "none":
        choice = body.get("tool_choice")
        fn = tools[0].get("function", {})
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
            fn = next((t["function"] for t in tools if t.get("function", {}).get("name") == wanted), fn)
        required = fn.get("parameters", {}).get("required", [])
        args = orjson.dumps({k: "fake" for k in required}).decode()
        call = {
            "id": "call_fake_1",
            "type": "function",
            "function": {"name": fn.get("name", "tool"), "arguments": args},
        }
        return "", [call]
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        return orjson.dumps({"fake": True, "echo": text}).decode(), None
    content = FIXED_REPLY if model.startswith("fixed") else f"[fake echo] {text}"
    for stop in _stops(body.get("stop")):
        if stop and stop in content:
            content = content[: content.index(stop)]
    return content, None


def _stops(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str)]
    return []


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(_count(message_text(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))


def fake_embedding(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on model and text (SHA-256 in counter mode)."""
    raw = b"".join(
        hashlib.sha256(f"{model}\x00{text}\x00{block}".encode()).digest() for block in range((dimensions + 7) // 8)
    )
    values = [v / 2**31 for v in struct.unpack(f"<{dimensions}i", raw[: dimensions * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _embedding_inputs(given: Any) -> list[str] | None:
    """The texts of an embeddings request (token-id inputs stand for their ids' text)."""
    if isinstance(given, str):
        return [given]
    if isinstance(given, list) and given and all(isinstance(x, str) for x in given):
        return given
    if isinstance(given, list) and given and all(isinstance(x, int) for x in given):
        return [" ".join(map(str, given))]
    if isinstance(given, list) and given and all(isinstance(x, list) for x in given):
        return [" ".join(map(str, x)) for x in given]
    return None


def create_fake_app() -> Starlette:
    state = _FakeState()

    async def completions(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "invalid JSON")
        model = str(body.get("model", ""))
        state.calls[model] += 1
        state.seen(request, body)
        behaviour = model.split("-", maxsplit=1)[0] if model.startswith(("slow", "flaky")) else model

        if model == "error-500":
            return _error(500, "fake upstream error (error-500)")
        if model.startswith("rate-limited-429"):
            wait = model.removeprefix("rate-limited-429").lstrip("-") or "1"
            return _error(429, "fake rate limit", headers={"Retry-After": wait})
        if behaviour == "flaky" and state.calls[model] % 2 == 1:
            return _error(500, "fake flaky failure")
        if behaviour == "slow":
            ms = model.removeprefix("slow").lstrip("-").removesuffix("ms") or "2000"
            await asyncio.sleep(int(ms) / 1000)

        state.served[model] += 1
        content, tool_calls = _reply_for(body)
        n = int(body.get("n") or 1)
        prompt_tokens = _prompt_tokens(body)
        completion_tokens = _count(content) * n if content else 8
        created = int(time.time())
        rid = f"chatcmpl-fake-{next(state.ids)}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _stream(rid, model, created, content, tool_calls, n, include_usage, prompt_tokens, completion_tokens),
                media_type="text/event-stream",
            )
        if model == "malformed-stream":
            return Response(b'{"id": "broken", "choices": [', media_type="application/json")
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        finish = "tool_calls" if tool_calls else "stop"
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": i, "message": message, "finish_reason": finish} for i in range(n)],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def _stream(
        rid: str,
        model: str,
        created: int,
        content: str,
        tool_calls: list[dict[str, Any]] | None,
        n: int,
        include_usage: bool,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> AsyncIterator[bytes]:
        def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
            payload: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if usage is not None:
                payload["usage"] = usage
            return b"data: " + orjson.dumps(payload) + b"\n\n"

        yield chunk(
            [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None} for i in range(n)]
        )
        if model == "malformed-stream":
            yield b"data: {not json\n\n"
            return
        if model == "never-ending-stream":
            while True:
                yield chunk([{"index": 0, "delta": {"content": "more "}, "finish_reason": None}])
                await asyncio.sleep(0.01)
        if tool_calls:
            delta = {"tool_calls": [{"index": 0, **tool_calls[0]}]}
            yield chunk([{"index": 0, "delta": delta, "finish_reason": None}])
            yield chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        else:
            words = content.split(" ")
            for i in range(n):
                for j, word in enumerate(words):
                    piece = word if j == 0 else " " + word
                    yield chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
            yield chunk([{"index": i, "delta": {}, "finish_reason": "stop"} for i in range(n)])
        if include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            yield chunk([], usage)
        yield b"data: [DONE]\n\n"

    async def messages(request: Request) -> Response:
        """Anthropic's Messages API, answering as ``echo`` does (text only)."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "invalid JSON")
        state.seen(request, body)
        model = str(body.get("model", ""))
        state.calls[model] += 1
        state.served[model] += 1
        turns = [{"role": m.get("role"), "content": m.get("content")} for m in body.get("messages") or []]
        text = f"[fake echo] {message_text(next((t['content'] for t in reversed(turns) if t['role'] == 'user'), ''))}"
        usage = {"input_tokens": _prompt_tokens({"messages": turns}), "output_tokens": _count(text)}
        mid = f"msg_fake_{next(state.ids)}"
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )

        async def events() -> AsyncIterator[bytes]:
            def event(kind: str, data: dict[str, Any]) -> bytes:
                return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"

            start = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": []}
            yield event("message_start", {"message": {**start, "usage": {**usage, "output_tokens": 1}}})
            yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            for j, word in enumerate(text.split(" ")):
                piece = word if j == 0 else " " + word
                yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
            yield event("content_block_stop", {"index": 0})
            yield event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": usage})
            yield event("message_stop", {})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "invalid JSON")
        state.seen(request, body)
        model = str(body.get("model", ""))
        state.calls[model] += 1
        if model == "error-500":
            return _error(500, "fake upstream error (error-500)")
        texts = _embedding_inputs(body.get("input"))
        dimensions = body.get("dimensions") or 64
        if texts is None or not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
            return _error(400, "input must be a string, strings or token ids; dimensions 1..4096")
        state.served[model] += 1
        data = []
        for i, text in enumerate(texts):
            vector: Any = fake_embedding(model, text, dimensions)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(_count(t) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})

    async def models(_: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "tierwise-fake"} for m in FAKE_MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def stats(_: Request) -> Response:
        return JSONResponse(
            {
                "served": dict(state.served),
                "calls": dict(state.calls),
                "last_request": state.last_request,
                "requests": state.requests,
            }
        )

    async def reset(_: Request) -> Response:
        state.served.clear()
        state.calls.clear()
        state.requests.clear()
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/reset", reset, methods=["POST"]),
        ]
    )
