"""Checking a chat-completions body: what passes unchanged, and which field each refusal names."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.chat_request import MAX_DEPTH, parse_chat_request
from gateway.errors import InvalidRequestError

USER = {"role": "user", "content": "hi"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = {"type": "function", "function": {"name": "weather", "description": "d", "parameters": SCHEMA}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [USER], **fields}


def refusal(sent: dict[str, Any], unknown: str = "reject") -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat_request(sent, unknown)  # type: ignore[arg-type]
    return info.value


def test_a_full_conversation_passes_exactly_as_sent() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": "be brief"},
        {"role": "system", "content": [{"type": "text", "text": "be kind"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "weather?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "Sunny.", "name": "bot"},
        USER,
    ]
    sent = body(
        messages=messages,
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA, "strict": True}},
        temperature=0.2,
        max_tokens=16,
        stop=["\n"],
        stream=True,
        stream_options={"include_usage": True},
        metadata={"team": "a"},
        logit_bias={"50256": -100},
    )
    chat = parse_chat_request(sent)
    assert chat.body == sent and chat.model == "auto" and chat.stream and chat.include_usage and chat.dropped == ()


@pytest.mark.parametrize(
    ("sent", "param", "code", "words"),
    [
        (body(fallbacks=["gpt-4o"]), "fallbacks", "unsupported_parameter", "credentials"),
        (body(api_base="http://evil"), "api_base", "unsupported_parameter", "policy"),
        (body(service_tier="priority"), "service_tier", "unsupported_parameter", "billed otherwise"),
        (
            body(messages=[{**USER, "cache_control": {"type": "ephemeral"}}]),
            "messages[0].cache_control",
            "unsupported_parameter",
            "not a field",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}]),
            "messages[0].content[0].cache_control",
            "unsupported_parameter",
            "not a field",
        ),
        (
            body(
                messages=[
                    USER,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}", "api_key": "k"},
                            }
                        ],
                    },
                ]
            ),
            "messages[1].tool_calls[0].function.api_key",
            "unsupported_parameter",
            "not a field",
        ),
        (
            body(tools=[{**TOOL, "function": {**TOOL["function"], "callbacks": []}}]),
            "tools[0].function.callbacks",
            "unsupported_parameter",
            "not a field",
        ),
        (
            body(stream_options={"include_usage": True, "mock": 1}),
            "stream_options.mock",
            "unsupported_parameter",
            "not a field",
        ),
        # a client's capitalised keys are path steps, not the union labels pydantic puts in locations
        (body(messages=[{**USER, "Name": "x"}]), "messages[0].Name", "unsupported_parameter", "not a field"),
        (
            body(messages=[{"role": "user", "content": [{"type": "text", "text": "x", "Cache": 1}]}]),
            "messages[0].content[0].Cache",
            "unsupported_parameter",
            "not a field",
        ),
        (body(metadata={"Team": 1}), "metadata.Team", None, "string"),
        (body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", None, "'robot' is not one of"),
        (body(messages=[{"content": "x"}]), "messages[0].role", None, "is not one of"),
        (body(messages=[USER, {"role": "user", "content": 5}]), "messages[1].content", None, ""),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id", None, "required"),
        (
            body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0].text",
            None,
            "required",
        ),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
                    }
                ]
            ),
            "messages[0].content[0].type",
            "unsupported_parameter",
            "parts",
        ),
        (
            body(
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://10.0.0.1/a.png"}}]}
                ]
            ),
            "messages[0].content[0].image_url.url",
            None,
            "https:",
        ),
        (body(tools=[{"type": "web_search"}]), "tools[0].type", None, "is not one of"),
        (body(tools=[{"type": "function", "function": {"name": 3}}]), "tools[0].function.name", None, "string"),
        (body(response_format={"type": "xml"}), "response_format.type", None, "'xml' is not one of"),
        (body(temperature="hot"), "temperature", None, "number"),
        (body(temperature=3), "temperature", None, "between 0 and 2"),
        (body(n=0), "n", None, "between"),
        (body(stream="yes"), "stream", None, "true or false"),
        ({"messages": [USER]}, "model", None, "string"),
        (body(model=42), "model", None, "string"),
        (body(messages=[]), "messages", None, "at least one"),
        (body(messages=["hi"]), "messages[0]", None, "object"),
    ],
)
def test_a_refusal_names_the_field(sent: dict[str, Any], param: str, code: str | None, words: str) -> None:
    err = refusal(sent)
    assert err.param == param, err.message
    assert err.message.startswith(f"{param}: ") or err.message.startswith(f"`{param}`"), err.message
    assert words in err.message
    if code:
        assert err.code == code


def test_nesting_past_the_limit_is_refused_not_a_crash() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_DEPTH + 5):
        node["a"] = {}
        node = node["a"]
    assert "nested" in refusal(body(metadata=deep)).message


def test_drop_mode_removes_unknown_fields_at_every_depth() -> None:
    part = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    sent = body(messages=[{"role": "user", "content": [part]}], fallbacks=["x"], stream=False, max_tokens=5)
    chat = parse_chat_request(sent, "drop")
    assert chat.dropped == ("fallbacks",)
    assert chat.body == {
        "model": "auto",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        "stream": False,
        "max_tokens": 5,
    }
    # what drop mode cannot fix is still refused
    assert refusal(body(messages=[{"role": "robot", "content": "x"}]), "drop").param == "messages[0].role"
