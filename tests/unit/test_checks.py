"""Answer checks: the same ones feed quality signals and escalation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.quality.checks import Reply, answer_of, failed_checks
from gateway.quality.sandbox import check_answer
from gateway.quality.schemas import INLINE_STEPS, OFF_LOOP_STEPS, OverBudget, Steps, over_budget, validates

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
        # a model that ignores tools: flagged when the request required a call, not when it let the model choose
        ({"tools": TOOLS}, completion("It is sunny."), []),
        ({"tools": TOOLS, "tool_choice": "required"}, completion("It is sunny."), ["tool_not_called"]),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "weather"}}},
            completion("It is sunny."),
            ["tool_not_called"],
        ),
        (
            {"tools": TOOLS, "tool_choice": "required"},
            completion(None, "tool_calls", [("weather", '{"city": "Oslo"}')]),
            [],
        ),
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
    assert failed_checks(request_body, answer_of(answer)).failed == expected


def test_a_broken_client_schema_is_not_the_answers_fault() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    assert failed_checks({"response_format": fmt}, Reply(text='{"a": 1}')).failed == []


# -- client schemas cost bounded work ---------------------------------------------------------
def doubling(depth: int) -> dict[str, Any]:
    """Each level's anyOf refers to the next twice: 2**depth paths through an 1-2 KB schema."""
    defs: dict[str, Any] = {f"l{i}": {"anyOf": [{"$ref": f"#/$defs/l{i + 1}"}] * 2} for i in range(depth)}
    defs[f"l{depth}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/l0"}


def nested_arrays() -> dict[str, Any]:
    """Recursive, within the schema budget, but each array level doubles the work on a deep answer."""
    return {"$defs": {"n": {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/n"}] * 2}}}, "$ref": "#/$defs/n"}


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}


def test_the_schema_budget_counts_ref_expansion_without_building_it() -> None:
    assert over_budget(doubling(10)) is None  # 2**10 paths: fine
    why = over_budget(doubling(24))
    assert why is not None and "20,000 nodes" in why
    assert over_budget(nested_arrays()) is None  # recursion is counted once: its depth is the answer's
    assert over_budget({"$ref": "#/$defs/missing"}) is None


def test_a_schema_over_budget_is_skipped_with_the_reason_not_failed() -> None:
    verdict = failed_checks(json_schema(doubling(24)), Reply(text="5"))
    assert verdict.failed == [] and verdict.skipped is not None and "$refs" in verdict.skipped
    # the other checks still run
    assert failed_checks(json_schema(doubling(24)), Reply(text="{oops")).failed == ["invalid_json"]


def test_validation_stops_at_its_step_budget() -> None:
    deep = 5
    for _ in range(18):
        deep = [deep]
    with pytest.raises(OverBudget):
        validates(deep, nested_arrays(), Steps(10_000))
    assert validates([["a"]], {"type": "array", "items": {"type": "array"}}, Steps(100))


def test_one_budget_covers_every_tool_call_of_an_answer() -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}},
        }
    ]
    calls = [("f", '{"a": 1}')] * 200
    assert failed_checks({"tools": tools}, Reply(tool_calls=calls), 10_000).failed == []
    with pytest.raises(OverBudget):
        failed_checks({"tools": tools}, Reply(tool_calls=calls), 500)


async def test_costly_checks_finish_off_the_loop_and_say_when_they_gave_up() -> None:
    deep: Any = "x"
    for _ in range(9):  # past the inline budget, within the worker's
        deep = [deep]
    request, reply = json_schema(nested_arrays()), Reply(text=orjson.dumps(deep).decode())
    with pytest.raises(OverBudget):
        failed_checks(request, reply, INLINE_STEPS)
    verdict = await check_answer(request, reply)
    assert verdict.failed == ["schema_mismatch"] and verdict.skipped is None
    for _ in range(20):  # past every budget
        deep = [deep]
    verdict = await check_answer(json_schema(nested_arrays()), Reply(text=orjson.dumps(deep).decode()))
    assert verdict.failed == [] and verdict.skipped is not None and f"{OFF_LOOP_STEPS:,} steps" in verdict.skipped


async def test_the_sandbox_ends_a_check_past_its_time_or_memory() -> None:
    from gateway.quality.sandbox import Sandbox

    # anyOf keeps each branch's error, each quoting the answer: memory grows as branches x answer
    request = json_schema({"anyOf": [{"type": "string"}] * 2_000})
    reply = Reply(text=orjson.dumps({"echo": "x" * 200_000}).decode())
    slow = Sandbox(timeout_s=0.01)
    try:
        verdict = await slow.check(request, reply)
        assert verdict.failed == [] and verdict.skipped == "the schema check took longer than 0.01 s"
        verdict = await slow.check(json_schema(SCHEMA), Reply(text='{"town": "Paris"}'))  # a new child
        assert verdict.failed == ["schema_mismatch"] and verdict.skipped is None
    finally:
        slow.close()
    small = Sandbox(timeout_s=30, memory_bytes=400 * 2**20)
    try:
        verdict = await small.check(request, reply)
        assert verdict.failed == [] and verdict.skipped == "the schema check ran out of memory"
    finally:
        small.close()
