"""OpenAI's Responses API <-> chat completions.

Stateless: the whole conversation comes in ``input`` (messages, function calls and their
outputs); nothing is stored, so ``previous_response_id``, ``conversation`` and ``store: true``
are refused. Function tools only (hosted tools such as web search run at OpenAI, not here).
Every field is checked against the ``openai`` SDK's type for it; a field this gateway does not
accept is refused naming it, never passed on.
"""

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
from gateway.translate.sse import DONE, chat_event, named_event
from gateway.usage import Usage, usage_of

__all__ = ["RESPONSES_FIELDS", "ResponseEvents", "chat_to_response", "responses_to_chat"]

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


# -- request ----------------------------------------------------------------------------------
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


# -- response ---------------------------------------------------------------------------------
def chat_to_response(
    chat: Mapping[str, Any], request: Mapping[str, Any], response_id: str, created: int
) -> dict[str, Any]:
    """A chat completion as a Responses API ``response`` object."""
    choices = chat.get("choices") or [{}]
    message = choices[0].get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content") or message.get("refusal"):
        output.append(_message_item(response_id, message.get("content") or "", message.get("refusal")))
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        output.append(
            _call_item(
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
        "usage": _usage(usage) if usage is not None else None,
        "user": request.get("user"),
    }


def _message_item(response_id: str, text: str, refusal: str | None = None, status: str = "completed") -> dict[str, Any]:
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


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's Responses usage counts as chat's does: cached tokens inside ``input_tokens``."""
    read = usage_of({"usage": usage}) or Usage(0, 0)
    return {
        "input_tokens": read.prompt_tokens,
        "input_tokens_details": {"cached_tokens": read.cache_read_tokens},
        "output_tokens": read.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": read.reasoning_tokens},
        "total_tokens": read.total,
    }


# -- stream -----------------------------------------------------------------------------------
class ResponseEvents:
    """Chat-completion chunks in, the Responses API's streaming events out.

    ``start()`` opens the response; ``feed()`` takes each relayed chat event and returns the
    events it becomes: text becomes a message item (``output_text.delta``), each tool call a
    ``function_call`` item (argument deltas), and ``[DONE]`` closes the open items and completes
    the response with usage. An error event from the relay becomes an ``error`` event.
    """

    def __init__(self, request: Mapping[str, Any], response_id: str, created: int) -> None:
        self._request = request
        self._id = response_id
        self._created = created
        self._seq = 0
        self._model = str(request.get("model", ""))
        self._output: list[dict[str, Any]] = []
        self._text: dict[str, Any] | None = None  # the open message item
        self._text_parts: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> open function_call item
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return named_event(kind, payload)

    def _snapshot(self, status: str) -> dict[str, Any]:
        return response_object(
            self._request, self._id, self._created, self._model, self._output, self._finish, self._usage, status
        )

    def start(self) -> list[bytes]:
        snapshot = self._snapshot("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, raw: bytes) -> list[bytes]:
        chunk = chat_event(raw)
        if chunk is None:
            return []
        if chunk == DONE:
            return self._complete()
        assert isinstance(chunk, dict)
        if isinstance(chunk.get("error"), dict):
            err = chunk["error"]
            return [self._event("error", code=err.get("code"), message=str(err.get("message", "")), param=None)]
        self._model = str(chunk.get("model") or self._model)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        out: list[bytes] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.extend(self._text_delta(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out.extend(self._call_delta(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _text_delta(self, text: str) -> list[bytes]:
        out = []
        if self._text is None:
            out.extend(self._close_calls())
            self._text = _message_item(self._id + f"_{len(self._output)}", "", status="in_progress")
            self._output.append(self._text)
            self._text_parts = []
            index = len(self._output) - 1
            out.append(self._event("response.output_item.added", output_index=index, item=dict(self._text)))
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._text["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        self._text_parts.append(text)
        index = self._output.index(self._text)
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self._text["id"],
                output_index=index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _call_delta(self, call: Mapping[str, Any]) -> list[bytes]:
        out = []
        key = int(call.get("index", 0))
        function = call.get("function") or {}
        item = self._calls.get(key)
        if item is None:
            out.extend(self._close_text())
            item = _call_item(
                f"fc_{self._id[5:]}_{len(self._output)}",
                call.get("id", ""),
                function.get("name", ""),
                "",
                "in_progress",
            )
            self._calls[key] = item
            self._output.append(item)
            out.append(self._event("response.output_item.added", output_index=len(self._output) - 1, item=dict(item)))
        args = function.get("arguments")
        if args:
            item["arguments"] += args
            index = self._output.index(item)
            out.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=args
                )
            )
        return out

    def _close_text(self) -> list[bytes]:
        item = self._text
        if item is None:
            return []
        self._text = None
        text = "".join(self._text_parts)
        index = self._output.index(item)
        part = {"type": "output_text", "text": text, "annotations": []}
        item.update(status="completed", content=[part])
        return [
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._event(
                "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
            ),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def _close_calls(self) -> list[bytes]:
        out = []
        for item in self._calls.values():
            index = self._output.index(item)
            item["status"] = "completed"
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        self._calls.clear()
        return out

    def _complete(self) -> list[bytes]:
        out = [*self._close_text(), *self._close_calls()]
        snapshot = self._snapshot("")  # status from the finish reason
        kind = "response.incomplete" if snapshot["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, response=snapshot))
        return out
