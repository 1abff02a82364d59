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

import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from openai.types.chat import completion_create_params as _sdk
from pydantic import TypeAdapter, ValidationError
from typing_extensions import is_typeddict

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

_TYPES = TypeAdapter(_sdk.CompletionCreateParamsBase)


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
    try:
        validated = _drain(_TYPES.validate_python(body, strict=True), (), body)
    except _Invalid as exc:
        raise InvalidRequestError(f"{exc.loc}: {exc.msg}", param=exc.loc) from None
    except ValidationError as exc:
        loc, msg = _describe(exc, body, ())
        raise InvalidRequestError(f"{loc}: {msg}", param=loc) from None
    # Top-level fields were allowlisted above (``stream`` is not in the types checked): look inside.
    extra = next((p for k, v in validated.items() if (p := _extra_key(body[k], v, (k,))) is not None), None)
    if extra is not None:
        if unknown == "reject":
            where = format_loc(extra)
            raise InvalidRequestError(
                f"{where}: not a field of this part of the chat-completions API",
                param=where,
                code="unsupported_parameter",
            )
        body = {**validated, **({"stream": body["stream"]} if "stream" in body else {})}
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


# -- validation against the SDK's types, with errors that name the field -------------------
class _Invalid(Exception):
    def __init__(self, loc: str, msg: str) -> None:
        self.loc, self.msg = loc, msg


def _drain(value: Any, path: tuple[int | str, ...], root: Any) -> Any:
    """The SDK types iterables as ``Iterable[...]``, which pydantic validates lazily: walk the
    result so every element is checked (keeping the path for the error message), and return it
    as plain lists and dicts."""
    if isinstance(value, dict):
        return {key: _drain(item, (*path, key), root) for key, item in value.items()}
    if isinstance(value, list):
        return [_drain(item, (*path, i), root) for i, item in enumerate(value)]
    if isinstance(value, Iterator):
        out: list[Any] = []
        while True:
            try:
                item = next(value)
            except StopIteration:
                return out
            except ValidationError as exc:
                # pydantic's locations start at the item's index already
                loc, msg = _describe(exc, _value_at(root, path), path)
                raise _Invalid(loc, msg) from None
            out.append(_drain(item, (*path, len(out)), root))
    return value


def _extra_key(sent: Any, known: Any, path: tuple[int | str, ...]) -> tuple[int | str, ...] | None:
    """The path of the first key the client sent that the validated value does not have."""
    if isinstance(sent, dict) and isinstance(known, dict):
        for key, value in sent.items():
            if key not in known:
                return (*path, key)
            found = _extra_key(value, known[key], (*path, key))
            if found is not None:
                return found
    elif isinstance(sent, list) and isinstance(known, list):
        for i, (a, b) in enumerate(zip(sent, known, strict=False)):
            found = _extra_key(a, b, (*path, i))
            if found is not None:
                return found
    return None


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


def _value_at(root: Any, path: Iterable[int | str]) -> Any:
    node = root
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _describe(exc: ValidationError, value: Any, prefix: tuple[int | str, ...]) -> tuple[str, str]:
    """The most useful of pydantic's errors: unions report one error per member, so keep the
    errors of the member the value itself names (its ``role`` or ``type``)."""
    errors = exc.errors()
    mismatches: list[tuple[tuple[int | str, ...], str, Any, str]] = []
    for err in errors:
        mismatch = _mismatch(err["loc"], value)
        if mismatch is None:
            return format_loc([*prefix, *(p for p in err["loc"] if not _is_tag(p))]), str(err["msg"])
        if mismatch[1]:
            mismatches.append(mismatch)
    if mismatches:  # no member matches: the discriminator itself is wrong
        where, key, got, _ = mismatches[0]
        allowed = sorted({_TAGS[tag][1] for w, _, _, tag in mismatches if w == where})
        return format_loc([*prefix, *where, key]), f"{got!r} is not one of {', '.join(map(repr, allowed))}"
    err = errors[0]
    return format_loc([*prefix, *(p for p in err["loc"] if not _is_tag(p))]), str(err["msg"])


def _mismatch(loc: tuple[int | str, ...], value: Any) -> tuple[tuple[int | str, ...], str, Any, str] | None:
    """None if the union branches named in ``loc`` match the value; else where they diverge
    (path, discriminator key or "" for a str/list branch, the value's own, the branch)."""
    node: Any = value
    where: tuple[int | str, ...] = ()
    for part in loc:
        if isinstance(part, str) and part in _TAGS:
            key, expected = _TAGS[part]
            got = node.get(key) if isinstance(node, dict) else None
            if got != expected:
                return where, key, got, part
            continue
        if isinstance(part, str) and _is_tag(part):
            scalar = part == "str" or part.startswith("literal[")
            if scalar != isinstance(node, (str, int, float)):
                return where, "", node, part
            continue
        where = (*where, part)
        node = _value_at(node, [part])
    return None


def _is_tag(part: int | str) -> bool:
    """Union-branch labels pydantic puts in error locations (class names, ``str``, ``list[...]``)."""
    return isinstance(part, str) and (part in _TAGS or part[:1].isupper() or "[" in part or part == "str")


def _discriminators() -> dict[str, tuple[str, str]]:
    """TypedDict name -> (key, literal) for every union in the SDK's request types whose members
    each fix one key to a literal (messages by ``role``, content parts and tools by ``type``)."""
    out: dict[str, tuple[str, str]] = {}
    seen: set[int] = set()

    def visit(tp: Any) -> None:
        if id(tp) in seen:
            return
        seen.add(id(tp))
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            members = [m for m in get_args(tp) if is_typeddict(m)]
            for m in members:
                for key, ann in get_type_hints(m).items():
                    literal = get_origin(ann) is Literal and len(get_args(ann)) == 1
                    if literal and isinstance(get_args(ann)[0], str) and all(key in get_type_hints(o) for o in members):
                        out[m.__name__] = (key, get_args(ann)[0])
                        break
        if is_typeddict(tp):
            for ann in get_type_hints(tp).values():
                visit(ann)
        for arg in get_args(tp):
            visit(arg)

    visit(_sdk.CompletionCreateParamsBase)
    return out


_TAGS = _discriminators()
