"""Any server that already speaks OpenAI's chat and embeddings APIs (OpenAI, llama.cpp, vLLM,
Ollama).

The fast path: one pooled aiohttp session, the request body passed on with only ``model`` (and
``stream_options`` for streams) changed, and the response bytes passed back. Stream events
are parsed only to read usage and count text, never re-serialised.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp.payload import BytesPayload

from gateway.chat_request import CHAT_FIELDS
from gateway.embeddings_request import EMBEDDING_FIELDS
from gateway.errors import UpstreamConnectError, UpstreamHTTPError, UpstreamProtocolError, UpstreamTimeoutError
from gateway.policy.models import Deployment
from gateway.providers.base import Completion, Provider, UpstreamStream
from gateway.redact import redact
from gateway.usage import Usage, prompt_tokens_bound, usage_of

__all__ = [
    "OpenAICompatibleProvider",
    "answer_of",
    "error_field",
    "first_line",
    "http_error",
    "parse_retry_after",
    "sse_events",
]


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LLM APIs; fall back to our own backoff


def http_error(
    status: int, reason: str | None, content: bytes, api_key: str | None, retry_after: str | None
) -> UpstreamHTTPError:
    """An upstream's error answer. The log gets its first line; a client may read only the message
    of a JSON error object (an API's words for its clients), never a text or HTML body (a proxy's
    page, a traceback). Both redacted: some upstreams echo our provider key into error bodies."""
    said = error_field(content)
    text = (said or content[:4096].decode(errors="replace") or reason or str(status)).strip()
    return UpstreamHTTPError(
        status, first_line(text, api_key), parse_retry_after(retry_after), first_line(said, api_key) if said else None
    )


def error_field(content: bytes | str) -> str | None:
    """``error.message`` (or a string ``error``) of a JSON error body, as OpenAI and Anthropic send it."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    return err if isinstance(err, str) and err else None


def first_line(text: str, api_key: str | None) -> str:
    # Redacted whole, then cut: a key that straddled the cut would lose its tail to it, not its head.
    return redact(text.strip().splitlines()[0] if text.strip() else "", [api_key])[:200]


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """A deployment's timeouts (one object per setting: building one costs a few µs a request)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=min(5.0, seconds), sock_read=seconds)


class OpenAICompatibleProvider(Provider):
    """aiohttp rather than httpx on this path: httpcore checks every idle pooled connection for
    readability on each request, which cost ~40% of the dispatch time under concurrency."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily, inside the running loop
            # No cap on connections: a stream holds one for as long as it runs, and a cap (aiohttp's
            # default is 100) queues every stream past it until an earlier one ends, tens of
            # seconds later. How many run at once is the clients' and the keys' limits' to say.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send(
        self,
        deployment: Deployment,
        api_key: str | None,
        body: dict[str, Any],
        path: str = "/chat/completions",
        fields: frozenset[str] = CHAT_FIELDS,
    ) -> aiohttp.ClientResponse:
        base = deployment.api_base  # from the policy, never the request
        if base is None and deployment.model.startswith("openai/"):
            base = "https://api.openai.com/v1"
        if base is None:
            raise UpstreamConnectError(f"deployment {deployment.name} has no api_base")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        try:
            # Only OpenAI's own fields travel on, whatever the caller hands us.
            payload = {k: v for k, v in body.items() if k in fields}
            response = await self._client().post(
                base.rstrip("/") + path,
                data=BytesPayload(orjson.dumps(payload), content_type="application/json"),
                headers=headers,
                timeout=_timeout(deployment.timeout_s),
            )
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError is a TimeoutError too
            raise UpstreamTimeoutError(f"upstream timed out: {type(exc).__name__}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"cannot reach upstream {deployment.name}: {type(exc).__name__}") from exc
        if response.status >= 400:
            try:
                content = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                content = b""
            finally:
                response.release()
            raise http_error(response.status, response.reason, content, api_key, response.headers.get("retry-after"))
        return response

    async def complete(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion:
        response = await self._send(deployment, api_key, {**body, "model": deployment.upstream_model})
        return await _answer(response, "choices")

    async def embed(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion:
        upstream_body = {**body, "model": deployment.upstream_model}
        response = await self._send(deployment, api_key, upstream_body, "/embeddings", EMBEDDING_FIELDS)
        return await _answer(response, "data")

    async def open_stream(
        self, deployment: Deployment, api_key: str | None, body: dict[str, Any], include_usage: bool
    ) -> UpstreamStream:
        upstream_body = {
            **body,
            "model": deployment.upstream_model,
            "stream": True,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        }
        response = await self._send(deployment, api_key, upstream_body)
        stream = UpstreamStream(events=_empty())

        def ended(done: bool) -> None:  # a stream that did not finish cannot go back to the pool
            if done:
                response.release()
            else:
                response.close()

        stream.events = sse_events(response.content.iter_any(), stream, include_usage, upstream_body, ended)
        return stream


async def sse_events(
    reads: AsyncIterator[bytes],
    stream: UpstreamStream,
    include_usage: bool,
    body: dict[str, Any],
    ended: Callable[[bool], object],
) -> AsyncIterator[bytes]:
    """An OpenAI-compatible upstream's events, from its body as it is read: each checked and
    accounted (``_inspect``), ended as OpenAI ends a stream (``_missing_end``); ``ended(done)``
    runs last, with whether the stream finished."""
    buffer = b""  # an event not complete yet
    last = b""  # the last event before [DONE]
    try:
        async for raw in reads:
            # One split per read: a read can hold hundreds of events, and re-splitting the rest
            # after each one made a burst quadratic.
            *events, buffer = (buffer + raw).replace(b"\r\n", b"\n").split(b"\n\n")
            for event in events:
                if _inspect(event, stream, include_usage):
                    if stream.done:
                        for end in _missing_end(last, stream, include_usage, body):
                            yield end
                    yield (last := event + b"\n\n")
                if stream.done or stream.error:
                    return
        if buffer.strip() and not stream.done and _inspect(buffer, stream, include_usage):
            if stream.done:
                for end in _missing_end(last, stream, include_usage, body):
                    yield end
            yield buffer + b"\n\n"
    except TimeoutError as exc:
        stream.error = "upstream_timeout"
        raise UpstreamTimeoutError("upstream stalled mid-stream") from exc
    except aiohttp.ClientError as exc:
        stream.error = "upstream_disconnected"
        raise UpstreamConnectError("upstream connection broke mid-stream") from exc
    finally:
        ended(stream.done)


def _inspect(event: bytes, stream: UpstreamStream, include_usage: bool) -> bool:
    """Read usage and text from one SSE event; False drops it (a usage chunk nobody asked for)."""
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            stream.done = True
            return True
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            stream.error = "malformed_stream"
            return False
        if not isinstance(payload, dict):
            stream.error = "malformed_stream"
            return False
        if payload.get("error") is not None:  # the upstream's own words (tracebacks, echoed keys): never relayed
            stream.error = "upstream_error"
            return False
        try:
            stream.observe(payload)
        except (AttributeError, TypeError, ValueError):  # a chunk whose fields are not of OpenAI's types
            stream.error = "malformed_stream"
            return False
        if "usage" in payload and not payload.get("choices") and not include_usage:
            return False
    return True


async def _answer(response: aiohttp.ClientResponse, required: str) -> Completion:
    """A JSON answer read whole."""
    try:
        content = await response.read()
    except TimeoutError as exc:
        raise UpstreamTimeoutError("upstream timed out while sending its answer") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectError(f"upstream connection broke: {type(exc).__name__}") from exc
    finally:
        response.release()
    return answer_of(content, required)


def answer_of(content: bytes, required: str) -> Completion:
    """An OpenAI-compatible JSON answer, checked for the list its kind always has (``choices``,
    each a choice with a ``message`` object; ``data``): what the translators and checks read."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError("upstream answered with invalid JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get(required), list):
        raise UpstreamProtocolError(f"upstream answer has no `{required}` list")
    if required == "choices" and not all(
        isinstance(c, dict) and isinstance(c.get("message"), dict) for c in payload["choices"]
    ):
        raise UpstreamProtocolError("upstream answer has a choice without a `message` object")
    return Completion(body=content, usage=usage_of(payload), payload=payload)


def _missing_end(last: bytes, stream: UpstreamStream, include_usage: bool, body: dict[str, Any]) -> list[bytes]:
    """What goes just before ``[DONE]`` so the stream ends as OpenAI ends one whatever the
    upstream sent: the first choice's last chunk carries a ``finish_reason``, and a client that
    asked for usage gets its chunk. When the upstream reported no usage it is estimated here,
    once, so the client's chunk and the ledger's row (marked estimated) hold the same counts."""
    estimated = stream.usage is None
    if stream.usage is None:
        prompt = prompt_tokens_bound(body, chars_per_token=4)
        stream.usage = Usage(prompt, (stream.completion_chars + 3) // 4, estimated=True)
    usage = stream.usage
    out = []
    fields = _chunk_fields(last)
    if stream.finish_reason is None:
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        stream.finish_reason = "length" if limit and usage.completion_tokens >= int(limit) else "stop"
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": stream.finish_reason}
        out.append(b"data: " + orjson.dumps({**fields, "choices": [choice]}) + b"\n\n")
    if estimated and include_usage:
        counts = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
        counts["total_tokens"] = usage.total
        out.append(b"data: " + orjson.dumps({**fields, "choices": [], "usage": counts}) + b"\n\n")
    return out


def _chunk_fields(event: bytes) -> dict[str, Any]:
    """``id``, ``created`` and ``model`` of a stream chunk (an event's last data line), for chunks
    the gateway adds to the same stream."""
    fields: dict[str, Any] = {"object": "chat.completion.chunk"}
    for line in reversed(event.split(b"\n")):
        if line.startswith(b"data:"):
            try:
                payload = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                break
            if isinstance(payload, dict):
                fields.update({k: payload[k] for k in ("id", "created", "model") if k in payload})
            break
    return fields


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator
