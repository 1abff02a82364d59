"""A Responses API request as a chat-completions body, each field checked against the SDK's type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, get_type_hints

from openai.types.responses import response_create_params as _params
from openai.types.responses.easy_input_message_param import EasyInputMessageParam
from openai.types.responses.function_tool_param import FunctionToolParam
from openai.types.responses.response_function_tool_call_param import ResponseFunctionToolCallParam
from openai.types.responses.response_input_image_param import ResponseInputImageParam
from openai.types.responses.response_input_item_param import FunctionCallOutput
from openai.types.responses.response_input_text_param import ResponseInputTextParam
from openai.types.responses.response_output_message_param import ResponseOutputMessageParam
from openai.types.responses.response_reasoning_item_param import ResponseReasoningItemParam
from openai.types.responses.tool_choice_function_param import ToolChoiceFunctionParam

from gateway.translate.check import FieldError, Loc, check

__all__ = ["RESPONSES_FIELDS", "responses_to_chat"]

_HINTS: Final = get_type_hints(_params.ResponseCreateParamsBase)
RESPONSES_FIELDS: Final = frozenset(_HINTS) | {"stream"}

# Chat-completions fields of the same name and meaning.
_SAME: Final = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
)
_STATELESS = "this gateway is stateless: send the whole conversation in `input`"
# Refused unless absent, null or false.
_REFUSED: Final = {
    "previous_response_id": _STATELESS,
    "conversation": _STATELESS,
    "store": "this gateway stores no responses: leave `store` unset or false",
    "background": "background responses are not supported",
    "prompt": "stored prompts are not supported: send `instructions` and `input`",
    "context_management": "server-side context management is not supported",
    "moderation": "moderation is not supported",
    "max_tool_calls": "`max_tool_calls` limits hosted tools, which this gateway does not run",
    "top_logprobs": "log-probabilities are not supported on this endpoint",
    "prompt_cache_options": "`prompt_cache_options` is not supported",
}
# ``include`` values that ask for items this gateway never produces, so they change nothing.
_INCLUDABLE: Final = frozenset({"reasoning.encrypted_content"})


def responses_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses API request as a chat-completions body; :class:`FieldError` if it cannot be one."""
    for key, value in body.items():
        if key not in RESPONSES_FIELDS:
            raise FieldError(key, "is not a Responses API parameter this gateway accepts", "unsupported_parameter")
        if key in _REFUSED and value not in (None, False):
            raise FieldError(key, _REFUSED[key], "unsupported_parameter")
    # ``model``: any string (the SDK's type adds a literal of OpenAI's names: slow, and no news).
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise FieldError("model", "is required: a string")
    for key in ("instructions", "max_output_tokens", "metadata", "reasoning", "truncation", *_SAME):
        if key in body:
            check(body[key], _HINTS[key], (key,))
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise FieldError("stream", "must be true or false")
    include = body.get("include") or []
    if include:
        check(include, _HINTS["include"], ("include",))
    for i, item in enumerate(include):
        if item not in _INCLUDABLE:
            raise FieldError(("include", i), f"{item!r} is not supported", "unsupported_parameter")

    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    for key in _SAME:
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("text") is not None:
        chat.update(_text(body["text"]))
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the final event carries usage
    return chat


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if body.get("instructions"):
        out.append({"role": "system", "content": body["instructions"]})
    given = body.get("input")
    if isinstance(given, str):
        out.append({"role": "user", "content": given})
    elif isinstance(given, list):
        for i, item in enumerate(given):
            _item(item, ("input", i), out)
    else:
        raise FieldError("input", "is required: a string or a list of input items")
    if not any(m["role"] != "system" for m in out):
        raise FieldError("input", "must hold at least one message")
    return out


def _item(item: Any, loc: Loc, out: list[dict[str, Any]]) -> None:
    if not isinstance(item, dict):
        raise FieldError(loc, "must be an object")
    kind = item.get("type", "message")
    if kind == "message":
        out.append(_message(item, loc))
    elif kind == "function_call":
        check(item, ResponseFunctionToolCallParam, loc)
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = out[-1] if out else None
        if last is not None and last["role"] == "assistant":  # text and calls of one turn: one message
            last.setdefault("tool_calls", []).append(call)
        else:
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        check(item, FunctionCallOutput, loc)
        output = item["output"]
        if not isinstance(output, str):
            output = [_part(p, (*loc, "output", j)) for j, p in enumerate(output)]
        out.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
    elif kind == "reasoning":
        check(item, ResponseReasoningItemParam, loc)  # a model's earlier reasoning, echoed back: not resent
    else:
        raise FieldError(
            (*loc, "type"),
            f"input items of type {kind!r} are not supported "
            "(supported: message, function_call, function_call_output, reasoning)",
            "unsupported_parameter",
        )


def _message(item: dict[str, Any], loc: Loc) -> dict[str, Any]:
    role, content = item.get("role"), item.get("content")
    if role == "assistant" and isinstance(content, list) and all(_is_output_part(p) for p in content):
        # An earlier answer, passed back as the API returned it.
        check({"id": "msg", "status": "completed", **item}, ResponseOutputMessageParam, loc)
        text = "".join(p.get("text") or p.get("refusal") or "" for p in content)
        return {"role": "assistant", "content": text}
    # The parts are checked one by one below, each against its own type.
    check({**item, "content": content if isinstance(content, str) else []}, EasyInputMessageParam, loc)
    chat_role = "system" if role == "developer" else role  # local servers rarely know `developer`
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise FieldError((*loc, "content"), "must be a string or a list of content parts")
    return {"role": chat_role, "content": [_part(p, (*loc, "content", j)) for j, p in enumerate(content)]}


def _is_output_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") in ("output_text", "refusal")


def _part(part: Any, loc: Loc) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "input_text":
        check(part, ResponseInputTextParam, loc)
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        check({"detail": "auto", **part}, ResponseInputImageParam, loc)
        if not part.get("image_url"):
            raise FieldError((*loc, "image_url"), "is required (uploaded files are not supported)")
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")}}
    raise FieldError(
        (*loc, "type"),
        f"content parts of type {kind!r} are not supported (input_text, input_image)",
        "unsupported_parameter",
    )


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise FieldError("tools", "must be a list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise FieldError(
                ("tools", i, "type"), f"only function tools are supported, not {kind!r}", "unsupported_parameter"
            )
        # The API defaults these two; the SDK's type marks them required.
        check({"strict": None, "parameters": None, **tool}, FunctionToolParam, ("tools", i))
        function = {"name": tool["name"]}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        check(choice, ToolChoiceFunctionParam, ("tool_choice",))
        return {"type": "function", "function": {"name": choice["name"]}}
    raise FieldError("tool_choice", "must be none, auto, required or a function", "unsupported_parameter")


def _text(text: Any) -> dict[str, Any]:
    check(text, _HINTS["text"], ("text",))
    out: dict[str, Any] = {}
    fmt = text.get("format") or {"type": "text"}
    if fmt["type"] == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if fmt.get(k) is not None}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    return out
