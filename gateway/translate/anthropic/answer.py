"""A chat completion as a Messages API ``message``, and Anthropic's error envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.usage import Usage, usage_of

__all__ = ["STOP_REASONS", "chat_to_message", "error_body", "error_type", "thinking_block", "tool_name", "usage_object"]

STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def chat_to_message(chat: Mapping[str, Any], message_id: str, names: Mapping[str, str]) -> dict[str, Any]:
    """A chat completion as a Messages API ``message``."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    # An Anthropic model's thinking comes first, signatures intact: the client sends it back
    content: list[dict[str, Any]] = [thinking_block(b) for b in message.get("thinking_blocks") or []]
    text = message.get("content") or message.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": tool_name(function.get("name", ""), names),
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": str(chat.get("model", "")),
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_object(chat.get("usage") or {}),
    }


def thinking_block(block: Mapping[str, Any]) -> dict[str, Any]:
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": str(block.get("data") or "")}
    return {
        "type": "thinking",
        "thinking": str(block.get("thinking") or ""),
        "signature": str(block.get("signature") or ""),
    }


def tool_name(name: str, names: Mapping[str, str]) -> str:
    return names.get(name, name)


def _arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's ``input`` must be ({} if not one)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def usage_object(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's usage from OpenAI's: Anthropic counts ``input_tokens`` without the cache
    reads and writes reported beside it (docs.anthropic.com, "Prompt caching": total input is
    the sum of the three), where OpenAI's ``prompt_tokens`` includes them."""
    read = usage_of({"usage": usage}) or Usage(0, 0)
    return {
        "input_tokens": read.uncached_prompt_tokens,
        "output_tokens": read.completion_tokens,
        "cache_read_input_tokens": read.cache_read_tokens,
        "cache_creation_input_tokens": read.cache_write_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": read.cache_write_tokens - read.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": read.cache_write_1h_tokens,
        },
    }


_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}
