"""A Messages API request, checked against the ``anthropic`` SDK's types, as a chat-completions
body through litellm's adapter (both loaded on first use: :func:`load`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, get_type_hints

from gateway.settings import offline_environment
from gateway.translate.anthropic.extras import Extras, find_extras
from gateway.translate.check import FieldError, Loc, check

__all__ = ["load", "loaded", "messages_to_chat"]

# Sampling fields older SDKs still send (the current SDK's type no longer lists them).
_LEGACY: Final = {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0)}
# Not for the adapter: thinking and breakpoints on blocks are carried to Anthropic deployments
# (extras.py); the service tier and automatic caching (a top-level cache_control) are not
# sent on: they mean nothing to the other providers behind a route.
_DROPPED: Final = frozenset({"thinking", "cache_control", "service_tier"})


@dataclass(frozen=True)
class _Kit:
    """The anthropic SDK's request types and litellm's adapter: ~3 s and ~5 s to import."""

    adapter: Any
    fields: frozenset[str]
    checked: dict[str, Any]  # top-level field -> its SDK type
    blocks: dict[str, Any]  # content block type -> its SDK type
    text_block: Any
    tool: Any


@functools.cache
def load() -> _Kit:
    """Import what translating a request needs; seconds the first time: call it in a thread."""
    offline_environment()  # before litellm's import, which would fetch its price map
    from anthropic import types  # noqa: PLC0415
    from anthropic.types import message_create_params  # noqa: PLC0415
    from litellm.llms.anthropic.pass_through.adapters import LiteLLMAnthropicMessagesAdapter  # noqa: PLC0415

    hints = get_type_hints(message_create_params.MessageCreateParamsBase)
    checked = {
        "metadata": types.MetadataParam,
        "thinking": types.ThinkingConfigParam,
        "tool_choice": types.ToolChoiceParam,
        "output_config": types.OutputConfigParam,
        "stop_sequences": list[str],
        "cache_control": hints["cache_control"],
        "service_tier": hints["service_tier"],
    }
    blocks = {
        "text": types.TextBlockParam,
        "image": types.ImageBlockParam,
        "tool_use": types.ToolUseBlockParam,
        "tool_result": types.ToolResultBlockParam,
        "thinking": types.ThinkingBlockParam,  # a model's earlier thinking, echoed back: not resent
        "redacted_thinking": types.RedactedThinkingBlockParam,
    }
    return _Kit(
        adapter=LiteLLMAnthropicMessagesAdapter(),  # type: ignore[no-untyped-call]
        fields=frozenset(hints) | set(_LEGACY) | {"stream"},
        checked=checked,
        blocks=blocks,
        text_block=types.TextBlockParam,
        tool=types.ToolParam,
    )


def loaded() -> bool:
    return load.cache_info().currsize > 0


_MESSAGE_KEYS: Final = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})


def messages_to_chat(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], Extras]:
    """A Messages API request as a chat-completions body, the adapter's map of shortened tool
    names back to the client's (OpenAI allows 64 characters), and what the request carries for
    Anthropic deployments only (:func:`~gateway.translate.anthropic.extras.carry` puts it on the
    body once that is checked)."""
    kit = load()
    _check(body, kit)
    request = {k: v for k, v in body.items() if k not in _DROPPED and k != "stream"}
    chat, names = kit.adapter.translate_anthropic_to_openai(request)
    chat = dict(chat)
    thoughts = {i: list(m["thinking_blocks"]) for i, m in enumerate(chat["messages"]) if m.get("thinking_blocks")}
    chat["messages"] = [_clean_message(m) for m in chat["messages"]]
    extras = find_extras(body, chat, thoughts)
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False  # the adapter drops it
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # message_delta carries usage
    return chat, dict(names), extras


def _check(body: Mapping[str, Any], kit: _Kit) -> None:
    for key, value in body.items():
        if key not in kit.fields:
            raise FieldError(key, "is not a Messages API parameter this gateway accepts", "unsupported_parameter")
        if key in kit.checked:
            check(value, kit.checked[key], (key,))
        elif key in _LEGACY:
            lo, hi = _LEGACY[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise FieldError(key, f"must be a number between {lo:g} and {hi:g}")
        elif key not in ("model", "max_tokens", "messages", "system", "tools", "stream"):
            raise FieldError(key, "is not supported by this gateway", "unsupported_parameter")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise FieldError("model", "is required: a string")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise FieldError("max_tokens", "is required: an integer of at least 1")
    if not isinstance(body.get("stream", False), bool):
        raise FieldError("stream", "must be true or false")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            raise FieldError("system", "must be a string or a list of text blocks")
        for i, block in enumerate(system):
            check(block, kit.text_block, ("system", i))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise FieldError("messages", "is required: a list holding at least one message")
    for i, message in enumerate(messages):
        _check_message(message, ("messages", i), kit.blocks)
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise FieldError("tools", "must be a list")
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in (None, "custom"):
            raise FieldError(
                ("tools", i, "type"),
                f"only client tools (name, description, input_schema) are supported, not {kind!r}",
                "unsupported_parameter",
            )
        check(tool, kit.tool, ("tools", i))


def _check_message(message: Any, loc: Loc, blocks: Mapping[str, Any]) -> None:
    if not isinstance(message, dict):
        raise FieldError(loc, "must be an object")
    if message.get("role") not in ("user", "assistant"):
        raise FieldError((*loc, "role"), "must be user or assistant (the system prompt goes in `system`)")
    extra = set(message) - {"role", "content"}
    if extra:
        raise FieldError((*loc, sorted(extra)[0]), "is not a message field")
    content = message.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise FieldError((*loc, "content"), "must be a string or a list of content blocks")
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str) or kind not in blocks:
            raise FieldError(
                (*loc, "content", j, "type"),
                f"content blocks of type {kind!r} are not supported (supported: {', '.join(blocks)})",
                "unsupported_parameter",
            )
        # null stands for absent: blocks a client passes back from an answer carry nulls
        check({k: v for k, v in block.items() if v is not None}, blocks[kind], (*loc, "content", j))


def _clean_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """Only chat-completions message fields: the adapter adds its own (``thinking_blocks``)."""
    out = {k: v for k, v in message.items() if k in _MESSAGE_KEYS and (v is not None or k == "content")}
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = [{k: v for k, v in p.items() if k != "cache_control"} for p in content]
    return out
