"""A chat completion as a Responses API ``response`` object, and the items it holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.usage import Usage, usage_of

__all__ = ["call_item", "chat_to_response", "message_item", "response_object", "usage_object"]


def chat_to_response(
    chat: Mapping[str, Any], request: Mapping[str, Any], response_id: str, created: int
) -> dict[str, Any]:
    """A chat completion as a Responses API ``response`` object."""
    choices = chat.get("choices") or [{}]
    message = choices[0].get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content") or message.get("refusal"):
        output.append(message_item(response_id, message.get("content") or "", message.get("refusal")))
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        output.append(
            call_item(
                f"fc_{response_id[5:]}_{i}", call.get("id", ""), function.get("name", ""), function.get("arguments", "")
            )
        )
    return response_object(
        request,
        response_id,
        created,
        str(chat.get("model", "")),
        output,
        choices[0].get("finish_reason"),
        chat.get("usage"),
    )


def response_object(
    request: Mapping[str, Any],
    response_id: str,
    created: int,
    model: str,
    output: list[dict[str, Any]],
    finish_reason: str | None,
    usage: Mapping[str, Any] | None,
    status: str | None = None,
) -> dict[str, Any]:
    incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish_reason or "")
    text = request.get("text") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status or ("incomplete" if incomplete else "completed"),
        "background": False,
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (request.get("reasoning") or {}).get("effort"), "summary": None},
        "store": False,
        "temperature": request.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity")},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": [{"strict": None, "parameters": None, **t} for t in request.get("tools") or []],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": usage_object(usage) if usage is not None else None,
        "user": request.get("user"),
    }


def message_item(response_id: str, text: str, refusal: str | None = None, status: str = "completed") -> dict[str, Any]:
    part: dict[str, Any] = (
        {"type": "refusal", "refusal": refusal} if refusal else {"type": "output_text", "text": text, "annotations": []}
    )
    return {
        "id": f"msg_{response_id[5:]}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [part] if status == "completed" else [],
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def usage_object(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's Responses usage counts as chat's does: cached tokens inside ``input_tokens``."""
    read = usage_of({"usage": usage}) or Usage(0, 0)
    return {
        "input_tokens": read.prompt_tokens,
        "input_tokens_details": {"cached_tokens": read.cache_read_tokens},
        "output_tokens": read.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": read.reasoning_tokens},
        "total_tokens": read.total,
    }
