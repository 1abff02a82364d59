"""Checks on an answer that need no extra call: the one set shared by the quality signals
(recorded on every request) and escalation (which asks the next tier when one fails).

    invalid_json       JSON was asked for (``response_format``) and the answer does not parse
    schema_mismatch    a ``json_schema`` was given and the answer does not validate against it
    tool_args_invalid  a tool call's arguments do not parse, or break the function's parameters
    tool_not_called    the request required a tool call (``tool_choice``: ``required`` or a named
                       function) and the answer made none: a model that ignores tools
    truncated          the answer stopped at the length limit the gateway chose (not the client)
    empty              no text and no tool call
    refusal            the model declined (OpenAI's ``refusal`` field, or a refusal opening)

Schemas come from clients, so the work of checking against one is bounded
(:mod:`gateway.quality.schemas`, and :mod:`gateway.quality.sandbox` for the request path): a
schema over its budget is skipped, and the verdict says why.
A schema that cannot be used is the client's problem, not the answer's: the checks never raise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.quality.schemas import OFF_LOOP_STEPS, OverBudget, Steps, over_budget, validates

__all__ = ["CHECKS", "Reply", "Verdict", "answer_of", "failed_checks", "schemas_in_play", "text_checks"]

CHECKS = ("invalid_json", "schema_mismatch", "tool_args_invalid", "tool_not_called", "truncated", "empty", "refusal")

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


@dataclass(frozen=True)
class Verdict:
    """The checks an answer fails, in ``CHECKS`` order, and why a schema check was skipped."""

    failed: list[str] = field(default_factory=list)
    skipped: str | None = None


def failed_checks(request: Mapping[str, Any], answer: Reply, steps: int = OFF_LOOP_STEPS) -> Verdict:
    """The checks the answer fails, spending at most ``steps`` on schemas (else
    :class:`~gateway.quality.schemas.OverBudget`); never raises otherwise, but for MemoryError."""
    try:
        return _failed(request, answer, Steps(steps) if steps else None)
    except (OverBudget, MemoryError):
        raise
    except Exception:  # a schema or an answer shaped like nothing we know: not the answer's failure
        return Verdict()


def text_checks(text: str) -> list[str]:
    """The checks a bare answer text can fail (no request, no finish reason): empty, refusal."""
    return failed_checks({}, Reply(text)).failed


def _failed(request: Mapping[str, Any], answer: Reply, steps: Steps | None) -> Verdict:
    """With no ``steps``, no schema is checked: what the other checks say when schemas ran out."""
    failed: list[str] = []
    skipped: list[str] = []
    fmt = request.get("response_format") or {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema") and not answer.tool_calls:
        try:
            value = orjson.loads(answer.text)
        except orjson.JSONDecodeError:
            failed.append("invalid_json")
        else:
            schema = (fmt.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
            if isinstance(schema, dict) and steps and not _fits(value, schema, steps, skipped):
                failed.append("schema_mismatch")
    if answer.tool_calls and _bad_tool_args(request.get("tools") or [], answer.tool_calls, steps, skipped):
        failed.append("tool_args_invalid")
    choice = request.get("tool_choice")
    required = choice == "required" or (
        isinstance(choice, dict) and choice.get("type") in ("function", "allowed_tools")
    )
    if request.get("tools") and required and not answer.tool_calls:
        failed.append("tool_not_called")
    if answer.finish_reason == "length" and not (request.get("max_tokens") or request.get("max_completion_tokens")):
        failed.append("truncated")
    if not answer.text.strip() and not answer.tool_calls and not answer.refusal:
        failed.append("empty")
    if answer.refusal or _REFUSAL.match(answer.text[:200]):
        failed.append("refusal")
    return Verdict(failed, "; ".join(skipped) or None)


def _fits(value: Any, schema: dict[str, Any], steps: Steps, skipped: list[str]) -> bool:
    """Whether the value fits; True (and the reason in ``skipped``) when the schema is over budget."""
    why = over_budget(schema)
    if why is not None:
        skipped.append(why)
        return True
    return validates(value, schema, steps)


def schemas_in_play(request: Mapping[str, Any], answer: Reply) -> list[Any]:
    """The client schemas the answer will be checked against: the response format's (for a text
    answer) and the parameters of each tool it calls."""
    found: list[Any] = []
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and not answer.tool_calls:
        found.append((fmt.get("json_schema") or {}).get("schema"))
    if answer.tool_calls:
        called = {name for name, _ in answer.tool_calls}
        for tool in request.get("tools") or []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and function.get("name") in called:
                found.append(function.get("parameters"))
    return [s for s in found if isinstance(s, dict)]


def _bad_tool_args(
    tools: Sequence[Any], calls: Sequence[tuple[str, str]], steps: Steps | None, skipped: list[str]
) -> bool:
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
        if name not in params:
            return True
        schema = params[name]
        if isinstance(schema, dict) and steps and not _fits(value, schema, steps, skipped):
            return True
    return False
