"""The built-in fake upstream: an OpenAI-compatible app whose behaviour is picked by model name,
for tests, demos and benchmarks with no network. ``fake/<behaviour>`` deployments call it in
process (:mod:`gateway.providers.fake`); tests also serve it over real HTTP
(``gateway.demo.server_thread``) as an ``openai/<behaviour>`` deployment's ``api_base``.

Models (prefix ``fake/`` in a policy):

    echo                   replies "[fake echo] <last user message>"
    fixed                  a fixed reply
    slow, slow-<ms>        echo after a delay (default 2000 ms)
    error-500              HTTP 500
    rate-limited-429[-<s>] HTTP 429 with Retry-After (default 1 s)
    flaky                  every other call fails with 500, starting with the first
    malformed-stream       a stream whose second chunk is not JSON (non-stream: invalid JSON)
    never-ending-stream    a stream that never finishes
    truncated-stream       a stream that stops half-way: no finish_reason, no [DONE]
    drip-<ms>              echo, each streamed chunk <ms> after the last
    error-echo-auth-<code> HTTP <code> whose error message repeats the request's Authorization
                           header and a server traceback (as some upstreams do)
    bills-request          echo, billing every character of the request (messages, tools,
                           schemas) as prompt tokens, 4 characters a token, as a provider would
    no-json-schema         echo, but a 500 with a traceback for a (valid) json_schema
                           response_format, as llama.cpp's server answers one it cannot compile
    skill-<n>              echo, marked adequate when n reaches the prompt's difficulty ("hard"
                           in it: 2, "medium": 1, else 0) and inadequate otherwise
    judge                  a judge that knows: reads the two answers in Tierwise's judge prompt
                           and prefers the adequate one ([[A>B]], [[B>A]] or [[A=B]])
    judge-garbled          a judge whose verdict cannot be read
    ignores-format         plain text, whatever response_format or tools ask for
    truncates              echo, cut off: finish_reason "length"
    empty                  an empty answer
    refuses                "I'm sorry, but I can't help with that."
    bad-tool-args          tool calls whose arguments are strings whatever the parameters' types
                           (every other model fills required parameters with a value of their type)

A request the fake cannot make sense of gets a 400, never a crash.

Every reply is marked as fake, so nobody mistakes it for a model's answer. Tools,
``response_format``, ``n`` and ``stop`` are honoured so passthrough can be tested: given tools,
the fake calls the first (or the one ``tool_choice`` names), and once the last message is that
tool's result it answers "[fake tool result] <result>".
``POST /v1/embeddings`` returns deterministic unit vectors (seeded by a hash of model and text;
``dimensions`` and ``encoding_format: base64`` honoured; model ``error-500`` fails).
``POST /v1/messages`` answers as ``echo`` does in Anthropic's Messages format, so deployments
served through litellm (``anthropic/...`` with this server as ``api_base``) can be tested;
``truncated-stream`` there stops after the text, with no stop reason and no ``message_stop``.
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
    "truncated-stream",
    "drip",
    "error-echo-auth",
    "bills-request",
    "no-json-schema",
    "skill",
    "judge",
    "judge-garbled",
    "ignores-format",
    "truncates",
    "empty",
    "refuses",
    "bad-tool-args",
)
FIXED_REPLY = "[fake] This is a fixed reply from the Tierwise fake provider."
REFUSAL = "I'm sorry, but I can't help with that."
# A value of each JSON type, for tool-call arguments that fit the declared parameters.
_SAMPLE: dict[Any, Any] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}, "string": "fake"}


def _count(text: str) -> int:
    return max(1, len(text.split()))


class _FakeState:
    def __init__(self) -> None:
        self.served: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.last_request: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []
        self.ids = itertools.count(1)

    def seen(self, request: Request, body: Any) -> None:
        self.last_request = {"body": body, "headers": dict(request.headers)}
        self.requests.append(
            {"method": request.method, "path": request.url.path, "headers": dict(request.headers), "body": body}
        )
        del self.requests[:-1000]

    async def receive(self, request: Request) -> tuple[dict[str, Any], str] | Response:
        """A call's JSON body and model, seen and counted; or the 400 for a body that is not JSON."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "invalid JSON")
        self.seen(request, body)
        model = str(body.get("model", ""))
        self.calls[model] += 1
        return body, model


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
    canned = {"ignores-format": f"Sure! Here you go: {text}", "empty": "", "refuses": REFUSAL}
    if model in canned:
        return canned[model], None
    tools = body.get("tools")
    if tools and body.get("tool_choice") != "none":
        choice = body.get("tool_choice")
        fn = tools[0].get("function", {})
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
            fn = next((t["function"] for t in tools if t.get("function", {}).get("name") == wanted), fn)
        params = fn.get("parameters", {})
        required = params.get("required", [])
        types = {k: (v or {}).get("type") for k, v in (params.get("properties") or {}).items()}
        # strings, whatever the schema says: bad-tool-args always, a skill-<n> model on a request
        # beyond its skill (as its text answers are inadequate there)
        sloppy = model.startswith("skill-") and int(model.removeprefix("skill-")) < _difficulty(text)
        if model == "bad-tool-args" or sloppy:
            values = {k: "fake" for k in required}
        else:
            values = {k: _SAMPLE.get(types.get(k), "fake") for k in required}
        args = orjson.dumps(values).decode()
        call = {
            "id": "call_fake_1",
            "type": "function",
            "function": {"name": fn.get("name", "tool"), "arguments": args},
        }
        return "", [call]
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        return orjson.dumps({"fake": True, "echo": text}).decode(), None
    if model.startswith("skill-"):
        return _skilled(int(model.removeprefix("skill-")), text), None
    if model.startswith("judge"):
        return _verdict(text) if model == "judge" else "Both answers have merit; I cannot decide.", None
    content = FIXED_REPLY if model.startswith("fixed") else f"[fake echo] {text}"
    for stop in _stops(body.get("stop")):
        if stop and stop in content:
            content = content[: content.index(stop)]
    return content, None


def _difficulty(text: str) -> int:
    words = text.lower()
    return 2 if "hard" in words else 1 if "medium" in words else 0


def _skilled(skill: int, text: str) -> str:
    adequate = skill >= _difficulty(text)
    return f"[fake skill-{skill}] {text} :: {'adequate' if adequate else 'inadequate'}"


def _verdict(prompt: str) -> str:
    """The judge's answer to Tierwise's judge prompt: the adequate answer wins."""
    a = prompt.split("[Answer A]", 1)[-1].split("[Answer B]", 1)[0]
    b = prompt.split("[Answer B]", 1)[-1]
    good_a, good_b = (":: adequate" in part for part in (a, b))
    verdict = "[[A=B]]" if good_a == good_b else "[[A>B]]" if good_a else "[[B>A]]"
    return f"Compared on correctness. {verdict}"


def _stops(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str)]
    return []


def _prompt_tokens(body: dict[str, Any]) -> int:
    if body.get("model") == "bills-request":
        billed = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options")}
        return max(1, len(orjson.dumps(billed)) // 4)
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
        received = await state.receive(request)
        if isinstance(received, Response):
            return received
        body, model = received
        behaviour = model.split("-", maxsplit=1)[0] if model.startswith(("slow", "flaky")) else model

        if model == "error-500":
            return _error(500, "fake upstream error (error-500)")
        if model == "no-json-schema" and (body.get("response_format") or {}).get("type") == "json_schema":
            return _error(500, 'Traceback (most recent call last):\n  File "/srv/llama/grammar.py": ValueError')
        if model.startswith("error-echo-auth"):
            status = int(model.rsplit("-", 1)[1]) if model[-3:].isdigit() else 500
            leak = f"request had Authorization: {request.headers.get('authorization')}"
            trace = 'Traceback (most recent call last):\n  File "/srv/fake/app.py", line 42, in handler'
            return _error(status, f"{leak}\n{trace}")
        if model.startswith("rate-limited-429"):
            wait = model.removeprefix("rate-limited-429").lstrip("-") or "1"
            return _error(429, "fake rate limit", headers={"Retry-After": wait})
        if behaviour == "flaky" and state.calls[model] % 2 == 1:
            return _error(500, "fake flaky failure")
        if behaviour == "slow":
            ms = model.removeprefix("slow").lstrip("-").removesuffix("ms") or "2000"
            await asyncio.sleep(int(ms) / 1000)

        try:
            content, tool_calls = _reply_for(body)
            n = int(body.get("n") or 1)
        except (AttributeError, KeyError, TypeError, ValueError):
            return _error(400, "the fake upstream cannot make sense of this request")
        state.served[model] += 1
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
        finish = "tool_calls" if tool_calls else "length" if model == "truncates" else "stop"
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
        if model == "truncated-stream":
            yield chunk([{"index": 0, "delta": {"content": "the beginning of an answer"}, "finish_reason": None}])
            return
        drip = int(model.removeprefix("drip-")) / 1000 if model.startswith("drip-") else 0.0
        if tool_calls:
            delta = {"tool_calls": [{"index": 0, **tool_calls[0]}]}
            yield chunk([{"index": 0, "delta": delta, "finish_reason": None}])
            yield chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
        else:
            words = content.split(" ")
            for i in range(n):
                for j, word in enumerate(words):
                    piece = word if j == 0 else " " + word
                    if drip:
                        await asyncio.sleep(drip)
                    yield chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
            finish = "length" if model == "truncates" else "stop"
            yield chunk([{"index": i, "delta": {}, "finish_reason": finish} for i in range(n)])
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
        received = await state.receive(request)
        if isinstance(received, Response):
            return received
        body, model = received
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
            if model == "truncated-stream":  # the connection ends here: no stop reason, no message_stop
                return
            yield event("content_block_stop", {"index": 0})
            yield event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": usage})
            yield event("message_stop", {})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        received = await state.receive(request)
        if isinstance(received, Response):
            return received
        body, model = received
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
