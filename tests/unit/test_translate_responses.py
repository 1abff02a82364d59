"""Responses API <-> chat completions, as pure functions: requests, answers and event streams."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.translate.check import FieldError
from gateway.translate.responses import ResponseEvents, chat_to_response, responses_to_chat
from tests.unit.sse import DONE, USAGE, chunk, parse, tool_delta


def test_input_items_become_chat_messages() -> None:
    chat = responses_to_chat(
        {
            "model": "auto",
            "instructions": "be brief",
            "input": [
                {"role": "developer", "content": "use metric units"},
                {"role": "user", "content": [{"type": "input_text", "text": "what is this?"},
                                             {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
                {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "look", "arguments": "{\"x\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "a cat"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "a hat"}]},
            ],
            "text": {"format": {"type": "json_schema", "name": "Answer", "schema": {"type": "object"}, "strict": True}},
            "max_output_tokens": 100,
            "reasoning": {"effort": "low"},
            "include": ["reasoning.encrypted_content"],
            "store": False,
        }
    )  # fmt: skip
    assert chat["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "system", "content": "use metric units"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "auto"}}]},
        # the text and both calls of one assistant turn: one chat message
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "a hat"}]},
    ]  # fmt: skip
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["max_completion_tokens"] == 100 and chat["reasoning_effort"] == "low"
    assert "stream" not in chat and "include" not in chat and "store" not in chat


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"store": True}, "store"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"include": ["message.output_text.logprobs"]}, "include[0]"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
    ],
)
def test_what_cannot_be_served_is_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(FieldError) as info:
        responses_to_chat({"model": "auto", "input": "x", **body})
    assert info.value.param == param


def test_a_chat_answer_becomes_a_response() -> None:
    chat = {
        "model": "up-model",
        "choices": [
            {
                "message": {
                    "content": "partial",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "length",
            }
        ],
        "usage": {**USAGE, "prompt_tokens_details": {"cached_tokens": 2}},
    }
    response = chat_to_response(chat, {"model": "auto", "tools": [{"type": "function", "name": "f"}]}, "resp_ab", 5)
    assert [item["type"] for item in response["output"]] == ["message", "function_call"]
    assert response["output"][1]["call_id"] == "c1" and response["model"] == "up-model"
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["usage"]["input_tokens_details"] == {"cached_tokens": 2} and response["usage"]["total_tokens"] == 10


def stream(chunks: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    events = ResponseEvents({"model": "auto", "input": "x"}, "resp_ab", 5)
    out = events.start()
    for raw in chunks:
        out.extend(events.feed(raw))
    return parse(out)


def test_text_then_tool_calls_stream_as_ordered_items() -> None:
    events = stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Let me "}),
            chunk({"content": "look."}),
            chunk(tool_delta(0, "", "look", "c1")),
            chunk(tool_delta(0, '{"q":')),
            chunk(tool_delta(0, '"cats"}')),
            chunk(tool_delta(1, "{}", "look", "c2")),
            chunk({}, "tool_calls"),
            chunk(None, usage=USAGE),
            DONE,
        ]
    )
    kinds = [(kind, data.get("output_index")) for kind, data in events]
    assert kinds == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.content_part.added", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.done", 0),
        ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.output_item.added", 2),
        ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.done", 1),
        ("response.output_item.done", 1),
        ("response.function_call_arguments.done", 2),
        ("response.output_item.done", 2),
        ("response.completed", None),
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["model"] == "up-model"
    assert final["output"][0]["content"][0]["text"] == "Let me look."
    assert final["output"][1]["arguments"] == '{"q":"cats"}' and final["output"][2]["call_id"] == "c2"
    assert final["usage"]["output_tokens"] == 3


def test_an_error_event_ends_the_stream_without_completing() -> None:
    error = b'data: {"error": {"message": "the upstream stream broke off", "code": "upstream_truncated"}}\n\n'
    events = stream([chunk({"content": "half"}), error])
    assert events[-1][0] == "error"
    assert events[-1][1]["code"] == "upstream_truncated" and "broke off" in events[-1][1]["message"]
    assert all(kind != "response.completed" for kind, _ in events)
