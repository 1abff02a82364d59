"""Chat completions -> Anthropic's Messages API, as pure functions: answers, streams, errors.
(Requests go through litellm's adapter, tested end to end in tests/test_api_messages.py.)"""

from __future__ import annotations

from typing import Any

from gateway.translate.anthropic import MessageEvents, chat_to_message, error_body
from tests.unit.sse import DONE, USAGE, chunk, parse, tool_delta


def test_a_chat_answer_becomes_a_message() -> None:
    chat = {
        "model": "up-model",
        "choices": [
            {
                "message": {
                    "content": "Checking.",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "short_name", "arguments": '{"q": "cats"}'}},
                        {"id": "c2", "function": {"name": "look", "arguments": "not json"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }
    message = chat_to_message(chat, "msg_ab", {"short_name": "a_tool_name_longer_than_openai_allows"})
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "c1", "name": "a_tool_name_longer_than_openai_allows", "input": {"q": "cats"}},
        {"type": "tool_use", "id": "c2", "name": "look", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use" and message["model"] == "up-model"
    assert message["usage"] == {
        "input_tokens": 7,
        "output_tokens": 3,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    }
    # Anthropic counts input_tokens without the cache reads and writes beside them (OpenAI with)
    cached = {**chat, "usage": {"prompt_tokens": 9_600, "completion_tokens": 50, "cache_read_input_tokens": 9_000,
                                "cache_creation_input_tokens": 500}}  # fmt: skip
    usage = chat_to_message(cached, "msg_ab", {})["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (
        100,
        9_000,
        500,
    )
    length = {"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]}
    assert chat_to_message(length, "msg_ab", {})["stop_reason"] == "max_tokens"


def stream(chunks: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    events = MessageEvents("msg_ab", "auto", {})
    out = events.start()
    for raw in chunks:
        out.extend(events.feed(raw))
    return parse(out)


def test_text_and_tool_use_stream_as_content_blocks() -> None:
    events = stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Let me look."}),
            chunk(tool_delta(0, '{"q":', "look", "c1")),
            chunk(tool_delta(0, '"cats"}')),
            chunk({}, "tool_calls"),
            chunk(None, usage=USAGE),
            DONE,
        ]
    )
    assert [(kind, data.get("index")) for kind, data in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0][1]["message"]["model"] == "up-model"  # the model that answered, from the first chunk
    assert events[4][1]["content_block"] == {"type": "tool_use", "id": "c1", "name": "look", "input": {}}
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '"cats"}'}
    assert events[8][1]["delta"]["stop_reason"] == "tool_use"
    assert events[8][1]["usage"]["output_tokens"] == 3


def test_errors_use_anthropics_envelope() -> None:
    error = b'data: {"error": {"message": "the upstream stream broke off", "code": "upstream_truncated"}}\n\n'
    events = stream([error])
    assert [kind for kind, _ in events] == ["message_start", "error"]
    assert events[1][1] == {"type": "error", "error": {"type": "api_error", "message": "the upstream stream broke off"}}
    assert error_body(429, "slow down")["error"]["type"] == "rate_limit_error"
    assert error_body(401, "who?")["error"]["type"] == "authentication_error"
    assert error_body(503, "busy")["error"]["type"] == "overloaded_error"
