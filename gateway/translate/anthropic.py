"""Anthropic's Messages API <-> chat completions.

Requests go through litellm's Anthropic adapter (``LiteLLMAnthropicMessagesAdapter``: content
blocks, images, tool use and results, system blocks, ``tool_choice``, stop sequences, structured
output), after each field and block is checked here against the ``anthropic`` SDK's type for it.
The adapter needs ``import litellm`` (~5 s) and the SDK's types take ~3 s more, so both are
loaded on first use, off the event loop (:func:`load`); a gateway whose clients never call
/v1/messages never pays for them.

Answers and streams are translated here rather than by the adapter: its stream wrapper works on
litellm's pydantic chunk objects (~460 µs a chunk measured, against ~5 µs here) and turns a
mid-stream failure into a normal end, where the client must see an ``error`` event.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, get_type_hints

import orjson

from gateway.settings import offline_environment
from gateway.translate.anthropic_extras import Extras, find_extras
from gateway.translate.check import FieldError, Loc, check
from gateway.translate.sse import DONE, chat_event, named_event
from gateway.usage import Usage, usage_of

__all__ = [
    "MessageEvents",
    "chat_to_message",
    "error_body",
    "error_type",
    "load",
    "loaded",
    "messages_to_chat",
]

# Sampling fields older SDKs still send (the current SDK's type no longer lists them).
_LEGACY: Final = {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0)}
# Not for the adapter: thinking and breakpoints on blocks are carried to Anthropic deployments
# (anthropic_extras); the service tier and automatic caching (a top-level cache_control) are not
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
_STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# -- request ----------------------------------------------------------------------------------
def messages_to_chat(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], Extras]:
    """A Messages API request as a chat-completions body, the adapter's map of shortened tool
    names back to the client's (OpenAI allows 64 characters), and what the request carries for
    Anthropic deployments only (:func:`~gateway.translate.anthropic_extras.carry` puts it on the
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


# -- response ---------------------------------------------------------------------------------
def chat_to_message(chat: Mapping[str, Any], message_id: str, names: Mapping[str, str]) -> dict[str, Any]:
    """A chat completion as a Messages API ``message``."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    # An Anthropic model's thinking comes first, signatures intact: the client sends it back
    content: list[dict[str, Any]] = [_thinking_block(b) for b in message.get("thinking_blocks") or []]
    text = message.get("content") or message.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": _name(function.get("name", ""), names),
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": str(chat.get("model", "")),
        "content": content,
        "stop_reason": _STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(chat.get("usage") or {}),
    }


def _thinking_block(block: Mapping[str, Any]) -> dict[str, Any]:
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": str(block.get("data") or "")}
    return {
        "type": "thinking",
        "thinking": str(block.get("thinking") or ""),
        "signature": str(block.get("signature") or ""),
    }


def _name(name: str, names: Mapping[str, str]) -> str:
    return names.get(name, name)


def _arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's ``input`` must be ({} if not one)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _usage(usage: Mapping[str, Any]) -> dict[str, Any]:
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


# -- errors -----------------------------------------------------------------------------------
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


# -- stream -----------------------------------------------------------------------------------
class MessageEvents:
    """Chat-completion chunks in, the Messages API's streaming events out: ``message_start``, a
    content block per text run or tool call (``text_delta`` / ``input_json_delta``),
    ``message_delta`` with the stop reason and usage, ``message_stop``; an error event from the
    relay becomes an ``error`` event."""

    def __init__(self, message_id: str, model: str, names: Mapping[str, str]) -> None:
        self._id = message_id
        self._model = model
        self._names = names
        self._started = False
        self._index = -1  # the open content block
        self._open: str | None = None  # its kind: "text" or the chat tool-call index as "tool:<i>"
        self._finish: str | None = None
        self._usage: Mapping[str, Any] = {}

    def start(self) -> list[bytes]:
        return []  # message_start waits for the first chunk, which names the model that answers

    def _message_start(self) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return named_event("message_start", {"type": "message_start", "message": message})

    def feed(self, raw: bytes) -> list[bytes]:
        chunk = chat_event(raw)
        if chunk is None:
            return []
        out: list[bytes] = []
        if not self._started:
            if isinstance(chunk, dict):
                self._model = str(chunk.get("model") or self._model)
            out.append(self._message_start())
        if chunk == DONE:
            return [*out, *self._stop()]
        assert isinstance(chunk, dict)
        if isinstance(chunk.get("error"), dict):
            return [*out, named_event("error", error_body(502, str(chunk["error"].get("message", ""))))]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for block in delta.get("thinking_blocks") or []:
                out.extend(self._thinking(block))
            text = delta.get("content")
            if text:
                out.extend(self._block("text", {"type": "text", "text": ""}))
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                kind = f"tool:{call.get('index', 0)}"
                if kind != self._open:
                    name = _name(function.get("name") or "", self._names)
                    out.extend(
                        self._block(kind, {"type": "tool_use", "id": call.get("id", ""), "name": name, "input": {}})
                    )
                if function.get("arguments"):
                    out.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _thinking(self, block: Mapping[str, Any]) -> list[bytes]:
        """litellm streams a thinking block as pieces: its text, then its signature."""
        if block.get("type") == "redacted_thinking":
            out = self._block("redacted", _thinking_block(block))
            self._open = "redacted:whole"  # a redacted block comes whole: the next one opens anew
            return out
        out = self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        if block.get("thinking"):
            out.append(self._delta({"type": "thinking_delta", "thinking": block["thinking"]}))
        if block.get("signature"):
            out.append(self._delta({"type": "signature_delta", "signature": block["signature"]}))
        return out

    def _block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        if kind == self._open:
            return []
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(
            named_event(
                "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
            )
        )
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return named_event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [named_event("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _stop(self) -> list[bytes]:
        out = self._close()
        delta = {"stop_reason": _STOP_REASONS.get(self._finish or "stop", "end_turn"), "stop_sequence": None}
        out.append(
            named_event("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(self._usage)})
        )
        out.append(named_event("message_stop", {"type": "message_stop"}))
        return out
