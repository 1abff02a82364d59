"""Reading and checking a chat-completions request body.

Only fields of OpenAI's chat-completions API are accepted, at every depth: each is checked
against the ``openai`` SDK's type for it, and a key the SDK's types do not have — top-level or
nested in a message, part or tool — is refused with ``unsupported_parameter`` naming its path (or
dropped when the policy says so). An unknown field could be an option of the library that calls
the provider (litellm takes ``fallbacks``, ``api_base``, ``callbacks``, ``cache_control``, ...).

Of the API's fields, only those whose cost is the tokens the gateway prices are forwarded
(``CHAT_FIELDS``, an explicit list: a field a newer SDK adds is refused until it is reviewed).
Audio, server-side tools, service tiers and cache retention are billed otherwise, and images
are taken only as ``https:`` or ``data:`` URLs (a provider's library may fetch others from the
gateway's own network).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints

from openai.types.chat import completion_create_params as _sdk
from pydantic import ValidationError

from gateway import sdk_types
from gateway.errors import InvalidRequestError
from gateway.policy.loader import format_loc

__all__ = ["CHAT_FIELDS", "MAX_DEPTH", "ChatRequest", "message_text", "parse_chat_request"]

SDK_FIELDS: frozenset[str] = frozenset(get_type_hints(_sdk.CompletionCreateParamsStreaming))
"""Every top-level field of ``POST /v1/chat/completions`` in the installed SDK, ``stream`` included."""

CHAT_FIELDS: frozenset[str] = SDK_FIELDS & {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "reasoning_effort",
    "verbosity",
    "prediction",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "metadata",
    "store",
}
"""The fields forwarded to providers: the API's, where what a call costs is its tokens."""

_PART_TYPES = frozenset({"text", "image_url"})  # content parts whose cost is tokens the gateway prices

MAX_DEPTH = 64
"""Nesting deeper than this is refused: nothing in the API needs it, and serialisers give up
further down (orjson at 255), which would otherwise surface as a server error."""


class _Body(_sdk.CompletionCreateParamsBase, total=False):
    stream: bool | None  # checked first, for a plainer message than the SDK's two literal types


@dataclass(frozen=True)
class ChatRequest:
    """A checked request: ``body`` holds only allowlisted fields, exactly as the client sent them."""

    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    dropped: tuple[str, ...] = ()  # unknown fields removed under ``limits.unknown_fields: drop``


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def parse_chat_request(body: dict[str, Any], unknown: Literal["reject", "drop"] = "reject") -> ChatRequest:
    dropped = tuple(k for k in body if k not in CHAT_FIELDS)
    if dropped:
        if unknown == "reject":
            key = dropped[0]
            why = (
                "it is billed otherwise than by the tokens this gateway prices"
                if key in SDK_FIELDS
                else "upstreams, credentials, timeouts and retries come from the gateway's policy"
            )
            raise InvalidRequestError(
                f"`{key}` is not a chat-completions parameter this gateway accepts: {why}",
                param=key,
                code="unsupported_parameter",
            )
        body = {k: v for k, v in body.items() if k in CHAT_FIELDS}
    _check_depth(body)
    _check_shape(body)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("stream: must be true or false", param="stream")
    # Top-level fields were allowlisted above; the SDK's types check what is inside them.
    try:
        validated = sdk_types.adapter(_Body, "ignore" if unknown == "drop" else "forbid").validate_python(
            body, strict=True
        )
    except ValidationError as exc:
        raise _refusal(exc, body) from None
    if unknown == "drop":
        body = validated
    _check_parts(body)
    _check_bounds(body)
    options = body.get("stream_options")
    return ChatRequest(
        body=body,
        model=body["model"],
        stream=bool(stream),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        dropped=dropped,
    )


# -- bounds the SDK's types do not carry ----------------------------------------------------
_BOUNDS: dict[str, tuple[float, float]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "n": (1, 16),
    "max_tokens": (1, 10**7),
    "max_completion_tokens": (1, 10**7),
    "frequency_penalty": (-2, 2),
    "presence_penalty": (-2, 2),
    "top_logprobs": (0, 20),
}


def _check_shape(body: Mapping[str, Any]) -> None:
    """The two fields everything else hangs on, with plainer messages than a union's errors."""
    model = body.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 256:
        raise InvalidRequestError("model: must be a string of 1 to 256 characters", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages: must be a list holding at least one message", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError(f"messages[{i}]: must be an object", param=f"messages[{i}]")


def _check_bounds(body: Mapping[str, Any]) -> None:
    for key, (lo, hi) in _BOUNDS.items():
        value = body.get(key)
        if value is not None and not lo <= value <= hi:
            raise InvalidRequestError(f"{key}: must be between {lo:g} and {hi:g}", param=key)


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequestError(f"request body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))


def _refusal(exc: ValidationError, body: Mapping[str, Any]) -> InvalidRequestError:
    found = sdk_types.problem(exc, body)
    where = format_loc(list(found.loc))
    if found.unknown_key:
        message = f"{where}: not a field of this part of the chat-completions API"
        return InvalidRequestError(message, param=where, code="unsupported_parameter")
    return InvalidRequestError(f"{where}: {found.message}", param=where)


def _check_parts(body: Mapping[str, Any]) -> None:
    for i, message in enumerate(body["messages"]):
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else []):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type")
            if kind not in _PART_TYPES:
                raise InvalidRequestError(
                    f"{where}.type: {kind!r} parts are not accepted (their cost is not tokens this gateway prices)",
                    param=f"{where}.type",
                    code="unsupported_parameter",
                )
            url = (part.get("image_url") or {}).get("url", "") if kind == "image_url" else ""
            if kind == "image_url" and not url.startswith(("https://", "data:")):
                raise InvalidRequestError(
                    f"{where}.image_url.url: only https: and data: URLs are accepted", param=f"{where}.image_url.url"
                )
