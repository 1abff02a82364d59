"""Checks on an answer that need no extra call: the one set shared by the quality signals
(recorded on every request) and escalation (which asks the next tier when one fails).

    invalid_json       JSON was asked for (``response_format``) and the answer does not parse
    schema_mismatch    a ``json_schema`` was given and the answer does not validate against it
    tool_args_invalid  a tool call's arguments do not parse, or break the function's parameters
    truncated          the answer stopped at the length limit the gateway chose (not the client)
    empty              no text and no tool call
    refusal            the model declined (OpenAI's ``refusal`` field, or a refusal opening)

Schemas come from clients, so they are only interpreted, never executed: no ``$ref`` leaves the
schema (nothing is fetched, no file is read), and ``pattern`` / ``patternProperties`` are not
checked (a client's regular expression could backtrack for minutes on the event loop). A schema
that cannot be used is the client's problem, not the answer's: the checks never raise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
from jsonschema.validators import Draft202012Validator, extend
from referencing import Registry

__all__ = ["CHECKS", "Reply", "answer_of", "failed_checks", "text_checks"]

CHECKS = ("invalid_json", "schema_mismatch", "tool_args_invalid", "truncated", "empty", "refusal")

# Openings of a refusal, as models phrase them; matched on the first sentence only.
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry,? but i (can(no|')t|am unable|won'?t)|i (can(no|')t|won'?t|am unable to) (help|assist|"
    r"comply|provide|do that)|sorry, (but )?i can(no|')t|as an ai( language model)?, i (can(no|')t|am not able))",
    re.IGNORECASE,
)


@dataclass
class Reply:
    """What the checks look at, from a completion or an accumulated stream (the first choice)."""

    text: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (function name, arguments)
    finish_reason: str | None = None
    refusal: str | None = None


def answer_of(completion: Mapping[str, Any]) -> Reply:
    """The first choice of an OpenAI chat completion (an empty reply for anything else)."""
    try:
        return _reply(completion)
    except (AttributeError, TypeError, ValueError):
        return Reply()


def _reply(completion: Mapping[str, Any]) -> Reply:
    choices = completion.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = first.get("message") or {}
    calls = [
        (str((c.get("function") or {}).get("name", "")), str((c.get("function") or {}).get("arguments") or ""))
        for c in message.get("tool_calls") or []
        if isinstance(c, dict)
    ]
    content = message.get("content")
    return Reply(
        text=content if isinstance(content, str) else "",
        tool_calls=calls,
        finish_reason=first.get("finish_reason"),
        refusal=message.get("refusal"),
    )


def _skip(*_: Any) -> None:
    return None


# Draft 2020-12 without the keywords that run the client's regular expressions.
_Validator = extend(Draft202012Validator, {"pattern": _skip, "patternProperties": _skip})
_NO_REMOTE = Registry()  # resolves nothing: a $ref outside the schema is unresolvable, not fetched


def failed_checks(request: Mapping[str, Any], answer: Reply) -> list[str]:
    """Names of the checks the answer fails, in ``CHECKS`` order; never raises."""
    try:
        return _failed(request, answer)
    except Exception:  # a schema or an answer shaped like nothing we know: not the answer's failure
        return []


def text_checks(text: str) -> list[str]:
    """The checks a bare answer text can fail (no request, no finish reason): empty, refusal."""
    return failed_checks({}, Reply(text))


def _failed(request: Mapping[str, Any], answer: Reply) -> list[str]:
    failed: list[str] = []
    fmt = request.get("response_format") or {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema") and not answer.tool_calls:
        try:
            value = orjson.loads(answer.text)
        except orjson.JSONDecodeError:
            failed.append("invalid_json")
        else:
            schema = (fmt.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
            if isinstance(schema, dict) and not _valid(value, schema):
                failed.append("schema_mismatch")
    if answer.tool_calls and _bad_tool_args(request.get("tools") or [], answer.tool_calls):
        failed.append("tool_args_invalid")
    if answer.finish_reason == "length" and not (request.get("max_tokens") or request.get("max_completion_tokens")):
        failed.append("truncated")
    if not answer.text.strip() and not answer.tool_calls and not answer.refusal:
        failed.append("empty")
    if answer.refusal or _REFUSAL.match(answer.text[:200]):
        failed.append("refusal")
    return failed


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    """Whether the value fits; True when the client's schema itself cannot be used."""
    try:
        error = next(_Validator(schema, registry=_NO_REMOTE).iter_errors(value), None)
    except (jsonschema.SchemaError, RecursionError, Exception):  # unresolvable $ref, broken schema
        return True
    return error is None


def _bad_tool_args(tools: Sequence[Any], calls: Sequence[tuple[str, str]]) -> bool:
    params = {
        t["function"].get("name"): t["function"].get("parameters")
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }
    for name, arguments in calls:
        try:
            value = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return True
        schema = params.get(name)
        if name not in params or (isinstance(schema, dict) and not _valid(value, schema)):
            return True
    return False
