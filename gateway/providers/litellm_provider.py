"""Providers that do not speak OpenAI's format (Anthropic, Bedrock, Gemini, ...), via litellm.

litellm is imported when this provider is built, i.e. only when the policy has such a
deployment: its import costs ~5 s and its per-call overhead is paid only where translation
is actually needed.
"""

from __future__ import annotations

import contextvars
import copy
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import httpx
import orjson

from gateway.chat_request import CHAT_FIELDS
from gateway.errors import (
    UnsendableRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from gateway.policy.models import Deployment
from gateway.providers.base import Completion, Provider, UpstreamStream
from gateway.providers.openai_compatible import error_field, first_line, parse_retry_after
from gateway.quality.schemas import over_budget
from gateway.redact import redact
from gateway.settings import offline_environment
from gateway.usage import usage_of

__all__ = ["LitellmProvider"]

log = logging.getLogger("tierwise.providers")

# The tool_use ids whose results this call marks as failed (a Messages request's ``is_error``,
# which litellm's chat translation has no place for): read by the transport that sends the call.
_FAILED_TOOLS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("failed_tools", default=frozenset())


class _MarkFailedTools(httpx.AsyncBaseTransport):
    """Sets ``is_error: true`` on the ``tool_result`` blocks litellm wrote for this call's failed
    tools, and on nothing else, then sends the request as it was otherwise."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        failed = _FAILED_TOOLS.get()
        if failed and request.method == "POST":
            body = orjson.loads(await request.aread())
            for message in (body.get("messages") or []) if isinstance(body, dict) else []:
                content = message.get("content") if isinstance(message, dict) else None
                for block in content if isinstance(content, list) else []:
                    if (
                        isinstance(block, dict)
                        and block.get("type") == "tool_result"
                        and block.get("tool_use_id") in failed
                    ):
                        block["is_error"] = True
            content = orjson.dumps(body)
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(content)).encode()))
            request = httpx.Request(
                request.method, request.url, headers=headers, content=content, extensions=request.extensions
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


# An agent's turn in OpenAI's shape, with every kind of part a request through litellm can carry:
# system text, an image, a tool call, a tool result, tools and a stream.
_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
]
_PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
_AGENT_TURN: list[Any] = [
    {"role": "system", "content": "You are a coding agent."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What does this show?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_PIXEL}"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "print('hi')"},
]


class LitellmProvider(Provider):
    def __init__(self) -> None:
        offline_environment()
        import litellm  # noqa: PLC0415 - deliberately lazy, see module docstring
        from litellm.types.utils import all_litellm_params  # noqa: PLC0415

        litellm.drop_params = True  # a parameter one provider lacks is dropped, not an error
        litellm.telemetry = False
        # litellm's loggers print through handlers of their own, which our redaction never sees:
        # send their records through the root handlers instead.
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
        # Bodies reach us allowlisted to OpenAI's fields; any of those that litellm also reads as
        # its own option (``metadata`` today; whatever a future SDK adds) is withheld, so nothing
        # a client sends can become a litellm setting (fallbacks, callbacks, credentials, ...).
        self._own = frozenset(all_litellm_params) | {"model", "messages", "stream", "stream_options"}
        self._litellm = litellm
        self._marking: Any = None  # litellm's HTTP client over _MarkFailedTools, made when first needed

    def self_check(self, deployments: Iterable[Deployment]) -> list[str]:
        """Translate an agent's turn for each deployment as litellm would before sending it, and
        report (loudly: the gateway's own fault) any module litellm needs that this install
        lacks. Only the translation runs: nothing is sent, no credentials are read."""
        from litellm.types.utils import LlmProviders  # noqa: PLC0415
        from litellm.utils import ProviderConfigManager  # noqa: PLC0415

        missing = []
        for deployment in deployments:
            try:
                model, provider, _, _ = self._litellm.get_llm_provider(deployment.model)
                config = ProviderConfigManager.get_provider_chat_config(model, LlmProviders(provider))
                if config is None:
                    continue
                wanted = {"tools": _TOOLS, "tool_choice": "auto", "max_tokens": 16, "stream": True}
                params = config.map_openai_params(wanted, {}, model, drop_params=True)
                config.transform_request(model, copy.deepcopy(_AGENT_TURN), params, {}, {})
            except ImportError as exc:
                missing.append(f"{deployment.name}: {exc}")
                log.error(
                    "deployment %s cannot be served: litellm needs a module this install lacks (%s); requests to"
                    " it will fail with 502 until it is installed. A gateway packaging bug: please report it",
                    deployment.name,
                    exc,
                )
            except Exception as exc:  # not this check's concern: the request path maps what litellm raises
                log.debug("self-check of deployment %s: %s: %s", deployment.name, type(exc).__name__, exc)
        return missing

    def _map_error(self, exc: Exception, api_key: str | None) -> UpstreamError:
        lt = self._litellm
        text = redact(str(getattr(exc, "message", exc)).strip().split("\n")[0], [api_key])[:200]
        if isinstance(exc, lt.Timeout):
            return UpstreamTimeoutError(text)
        if isinstance(exc, lt.APIConnectionError):
            missing = _cause(exc, ImportError)
            if missing is not None:  # our install's fault: never the client's 400
                log.error("litellm needs a module this install lacks (%s): a gateway bug, please report it", missing)
                return UpstreamProtocolError(f"the gateway's provider library is incomplete: {missing}")
            # litellm also raises this for a request it cannot translate, before sending anything:
            # only a transport failure underneath makes it the deployment's fault.
            return UpstreamConnectError(text) if _transport_failure(exc) else UnsendableRequest(text)
        if _cause(exc, _UNREACHABLE) is not None:  # litellm words a refused connection as its 500
            return UpstreamConnectError(text)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or {}
            return UpstreamHTTPError(status, text, parse_retry_after(headers.get("retry-after")), _said(exc, api_key))
        return UpstreamProtocolError(f"{type(exc).__name__}: {text}")

    def _kwargs(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> dict[str, Any]:
        _check_schemas(body)
        params = {k: v for k, v in body.items() if k in CHAT_FIELDS and k not in self._own}
        if "thinking" in body:  # only an Anthropic deployment's body has it (anthropic_fields)
            params["thinking"] = body["thinking"]
        messages = body["messages"]
        if any(m.get("is_error") is True for m in messages):  # idem: failed tool results
            params["client"] = self._marking_client()
            messages = [{k: v for k, v in m.items() if k != "is_error"} for m in messages]
        return {
            **params,
            # From the policy only, and last, so nothing above can stand in for them.
            "model": deployment.model,
            "messages": messages,
            "api_base": deployment.api_base,
            "api_key": api_key,
            "timeout": deployment.timeout_s,
            "num_retries": 0,  # retries and fallbacks are the dispatcher's
            # litellm's own flag for calls that are not MCP gateway calls: without it, any request
            # with tools imports its MCP handler first, which needs the `mcp` package.
            "_skip_mcp_handler": True,
        }

    def _marking_client(self) -> Any:
        if self._marking is None:
            from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler  # noqa: PLC0415

            self._marking = AsyncHTTPHandler(transport=_MarkFailedTools())
        return self._marking

    async def aclose(self) -> None:
        if self._marking is not None:
            await self._marking.close()

    async def complete(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion:
        kwargs = self._kwargs(deployment, api_key, body)
        marked = _FAILED_TOOLS.set(_failed_tools(body))
        try:
            resp = await self._litellm.acompletion(**kwargs)
        except Exception as exc:  # litellm raises many types; all are mapped
            raise self._map_error(exc, api_key) from exc
        finally:
            _FAILED_TOOLS.reset(marked)
        payload = _openai_shaped(resp.model_dump(exclude_none=True))
        return Completion(body=orjson.dumps(payload), usage=usage_of(payload), payload=payload)

    async def open_stream(
        self, deployment: Deployment, api_key: str | None, body: dict[str, Any], include_usage: bool
    ) -> UpstreamStream:
        kwargs = self._kwargs(deployment, api_key, body)
        marked = _FAILED_TOOLS.set(_failed_tools(body))
        try:  # the request is sent before litellm hands back the stream
            chunks = await self._litellm.acompletion(**kwargs, stream=True, stream_options={"include_usage": True})
        except Exception as exc:
            raise self._map_error(exc, api_key) from exc
        finally:
            _FAILED_TOOLS.reset(marked)
        stream = UpstreamStream(events=_nothing())
        # One choice, from a provider whose every finish reason litellm records (see _invented_finish)
        judged = getattr(chunks, "custom_llm_provider", None) in _FINISH_RECORDED and body.get("n") in (None, 1)
        stream.events = self._events(chunks, stream, include_usage, api_key, judged)
        return stream

    async def _events(
        self, chunks: Any, stream: UpstreamStream, include_usage: bool, api_key: str | None, judged: bool
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                payload = chunk.model_dump(exclude_none=True)
                if judged and _invented_finish(chunks, payload):
                    return  # not done: the relay ends the stream with upstream_truncated, no [DONE]
                stream.observe(payload)
                usage = payload.get("usage")
                if usage and not payload.get("choices") and not include_usage:
                    continue
                if usage and not include_usage:
                    payload.pop("usage", None)
                yield b"data: " + orjson.dumps(payload) + b"\n\n"
        except Exception as exc:
            raise self._map_error(exc, api_key) from exc
        stream.done = True
        yield b"data: [DONE]\n\n"


# Providers whose chunks take litellm's generic path, which records an upstream's finish reason
# on the stream wrapper before sending it on. Not Gemini/Vertex (litellm stamps "stop" on every
# chunk there and forgets it again after a usage chunk) nor Bedrock's invoke route (Titan and
# Llama's stop reasons are never read): there a whole stream would look cut, a cut one whole.
_FINISH_RECORDED = frozenset({"anthropic", "openai", "azure"})


def _invented_finish(chunks: Any, payload: dict[str, Any]) -> bool:
    """Whether this chunk's finish reason is litellm's own: a stream whose upstream ended without
    one (a connection cut mid-answer) gets "stop" from litellm's stream wrapper when it runs out
    (``CustomStreamWrapper.finish_reason_handler``), which would pass a truncated answer off as
    whole."""
    if not any(isinstance(c, dict) and c.get("finish_reason") for c in payload.get("choices") or []):
        return False
    said = getattr(chunks, "received_finish_reason", None) or getattr(chunks, "intermittent_finish_reason", None)
    return said is None


def _said(exc: Exception, api_key: str | None) -> str | None:
    """The provider's JSON error message inside a litellm error, if there is one: litellm words
    it as "AnthropicException - {the provider's body}"; nothing else of it is for a client."""
    message = str(getattr(exc, "message", ""))
    start = message.find("{")
    said = error_field(message[start:]) if start >= 0 else None
    return first_line(said, api_key) if said else None


def _check_schemas(body: dict[str, Any]) -> None:
    """litellm inlines every ``$ref`` of a client schema for some providers (Bedrock tools,
    Anthropic's output format), by copying: a schema over the expansion budget is refused here
    rather than expanded there."""
    fmt = body.get("response_format")
    schemas = (
        [("response_format.json_schema.schema", (fmt.get("json_schema") or {}).get("schema"))]
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema"
        else []
    )
    for i, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict):
            schemas.append((f"tools[{i}].function.parameters", function.get("parameters")))
    for where, schema in schemas:
        why = over_budget(schema) if isinstance(schema, dict) else None
        if why is not None:
            text = f"{where}: {why}, which this provider's translation would copy out in full"
            raise UnsendableRequest(text, message=text)


def _failed_tools(body: dict[str, Any]) -> frozenset[str]:
    """The ids of the tool messages marked ``is_error`` (anthropic_fields puts the mark there)."""
    return frozenset(
        str(m.get("tool_call_id")) for m in body["messages"] if m.get("role") == "tool" and m.get("is_error") is True
    )


_UNREACHABLE = (httpx.ConnectError, aiohttp.ClientConnectorError)


def _transport_failure(exc: BaseException) -> bool:
    transport = (httpx.TransportError, aiohttp.ClientConnectionError, ConnectionError, TimeoutError)
    return _cause(exc, transport) is not None


def _cause(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kind`` in the chain of causes (``exc`` included)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, kind):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


def _openai_shaped(payload: dict[str, Any]) -> dict[str, Any]:
    """litellm's answer as OpenAI's API gives it: a message's tool calls carry no stream ``index``,
    and ``provider_specific_fields`` with nothing in it is dropped. Agents send the message back
    as it came (the openai SDK dumps its extra fields too), and the chat API refuses those fields."""
    for choice in payload.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                call.pop("index", None)
        extra = message.get("provider_specific_fields")
        if isinstance(extra, dict) and not any(extra.values()):
            del message["provider_specific_fields"]
    return payload
