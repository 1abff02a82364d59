"""Answer checks: the same ones feed quality signals and escalation."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.quality.checks import Reply, answer_of, failed_checks

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}]


def completion(
    content: Any = "fine", finish: str = "stop", tool_calls: list[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, **extra}
    if tool_calls:
        message["tool_calls"] = [
            {"id": "c", "type": "function", "function": {"name": n, "arguments": a}} for n, a in tool_calls
        ]
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}


@pytest.mark.parametrize(
    ("request_body", "answer", "expected"),
    [
        ({}, completion("Paris."), []),
        ({"response_format": {"type": "json_object"}}, completion('{"a": 1}'), []),
        ({"response_format": {"type": "json_object"}}, completion("Sure! {a: 1}"), ["invalid_json"]),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}},
            completion('{"town": "Paris"}'),
            ["schema_mismatch"],
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}},
            completion('{"city": "Paris"}'),
            [],
        ),
        ({"tools": TOOLS}, completion(None, "tool_calls", [("weather", '{"city": "Oslo"}')]), []),
        ({"tools": TOOLS}, completion(None, "tool_calls", [("weather", '{"town": "Oslo"}')]), ["tool_args_invalid"]),
        ({"tools": TOOLS}, completion(None, "tool_calls", [("weather", "{city: Oslo")]), ["tool_args_invalid"]),
        ({"tools": TOOLS}, completion(None, "tool_calls", [("forecast", "{}")]), ["tool_args_invalid"]),
        ({}, completion("It was the best of", "length"), ["truncated"]),
        ({"max_tokens": 5}, completion("It was the best of", "length"), []),  # the client chose that limit
        ({}, completion(""), ["empty"]),
        ({}, completion(None), ["empty"]),
        ({}, completion("I'm sorry, but I can't help with that."), ["refusal"]),
        ({}, completion("As an AI language model, I cannot browse."), ["refusal"]),
        ({}, completion(None, refusal="I can't help with that."), ["refusal"]),
        ({}, completion("I'm sorry to hear that. Here is what to do: ..."), []),
    ],
)
def test_checks(request_body: dict[str, Any], answer: dict[str, Any], expected: list[str]) -> None:
    assert failed_checks(request_body, answer_of(answer)) == expected


def test_a_broken_client_schema_is_not_the_answers_fault() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    assert failed_checks({"response_format": fmt}, Reply(text='{"a": 1}')) == []
