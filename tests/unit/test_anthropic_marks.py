"""Cache breakpoints of a Messages request: placed on the parts litellm's adapter makes of their
blocks, counted against Anthropic's limit, and kept from deployments that do not take them."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy.models import Deployment
from gateway.providers.anthropic_fields import MARKER, for_deployment, place_breakpoints
from gateway.translate.anthropic import messages_to_chat
from gateway.translate.anthropic.extras import carry
from gateway.translate.check import FieldError

CC = {"type": "ephemeral"}
TOOL = {"name": "edit", "input_schema": {"type": "object"}}


def _chat(**body: Any) -> dict[str, Any]:
    chat, _, extras = messages_to_chat({"model": "m", "max_tokens": 10, **body})
    assert not extras.lost, extras.lost
    return carry(chat, extras)


def test_each_mark_lands_on_the_part_made_of_its_block() -> None:
    chat = _chat(
        system=[{"type": "text", "text": "a"}, {"type": "text", "text": "big", "cache_control": CC}],
        tools=[{**TOOL, "cache_control": CC}],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y", "cache_control": CC}],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "edit", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "done", "cache_control": CC},
                    {"type": "text", "text": "next"},
                ],
            },
        ],
    )
    messages = chat["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert "cache_control" not in messages[0]["content"][0] and messages[0]["content"][1]["cache_control"] == CC
    assert messages[1]["content"][1]["cache_control"] == CC
    # on the tool message itself: litellm marks the tool_result and keeps its text a string, as
    # the next turn (unmarked) will send it
    assert messages[3]["content"] == "done" and messages[3]["cache_control"] == CC
    assert chat["tools"][0]["cache_control"] == CC and chat[MARKER] == ["cache_control"]


def test_a_request_without_marks_is_untouched() -> None:
    chat = _chat(messages=[{"role": "user", "content": "hi"}])
    assert MARKER not in chat and "cache_control" not in str(chat)


def test_a_fifth_mark_is_refused_with_the_count() -> None:
    blocks = [{"type": "text", "text": str(i), "cache_control": CC} for i in range(5)]
    with pytest.raises(FieldError, match=r"at most 4 blocks may carry cache_control.*found 5"):
        messages_to_chat({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": blocks}]})


def test_other_deployments_get_the_body_without_them() -> None:
    chat = _chat(
        system=[{"type": "text", "text": "big", "cache_control": CC}],
        tools=[{**TOOL, "cache_control": CC}],
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "edit", "input": {}}]},
            # its mark goes on the tool message itself
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok", "cache_control": CC}],
            },
        ],
    )
    claude = Deployment(name="c", model="anthropic/claude-haiku-4-5")
    local = Deployment(name="l", model="openai/smol", api_base="http://127.0.0.1:1/v1")
    assert for_deployment(chat, claude) == (chat, [])
    body, dropped = for_deployment(chat, local)
    assert dropped == ["cache_control"] and "cache_control" not in str(body) and MARKER not in body
    assert "cache_control" in str(chat)  # the original is not changed for the next step


def test_thinking_and_earlier_thoughts_reach_only_anthropic() -> None:
    thought = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    chat = _chat(
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [thought, {"type": "tool_use", "id": "t1", "name": "edit", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        ],
    )
    assert chat["thinking"] == {"type": "enabled", "budget_tokens": 1024} and chat[MARKER] == ["thinking"]
    assert chat["messages"][1]["thinking_blocks"] == [thought]
    claude = Deployment(name="c", model="anthropic/claude-haiku-4-5")
    local = Deployment(name="l", model="openai/smol", api_base="http://127.0.0.1:1/v1")
    assert for_deployment(chat, claude) == (chat, [])
    body, dropped = for_deployment(chat, local)
    assert dropped == ["thinking"] and "thinking" not in str(body)


def test_a_failed_tool_result_is_marked_on_its_tool_message_for_anthropic_only() -> None:
    calls = [{"type": "tool_use", "id": f"t{i}", "name": "edit", "input": {}} for i in (1, 2)]
    chat = _chat(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": calls},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "no such file", "is_error": True},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "ok", "is_error": False},
                ],
            },
        ],
    )
    assert chat[MARKER] == ["is_error"]
    assert [(m.get("tool_call_id"), m.get("is_error")) for m in chat["messages"][2:]] == [("t1", True), ("t2", None)]
    claude = Deployment(name="c", model="anthropic/claude-haiku-4-5")
    local = Deployment(name="l", model="openai/smol", api_base="http://127.0.0.1:1/v1")
    assert for_deployment(chat, claude) == (chat, [])
    body, dropped = for_deployment(chat, local)
    assert dropped == ["is_error"] and "is_error" not in str(body["messages"])


def test_auto_breakpoints_go_where_anthropic_puts_them_and_keep_the_prefix_stable() -> None:
    tools = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in ("a", "b")]
    system = [{"role": "system", "content": "rules"}, {"role": "developer", "content": "more"}]
    turn = [*system, {"role": "user", "content": "fix it"}]
    marked = place_breakpoints({"model": "m", "tools": tools, "messages": turn})
    assert "cache_control" not in marked["tools"][0] and marked["tools"][1]["cache_control"] == CC
    assert [m.get("cache_control") for m in marked["messages"]] == [None, CC, CC]
    assert turn[2] == {"role": "user", "content": "fix it"}  # the client's body is not changed
    # the next turn: the mark moves to its last message; a tool result's and a list's last part take it
    later = [*turn, {"role": "assistant", "content": "ok"}, {"role": "tool", "tool_call_id": "1", "content": "out"}]
    moved = place_breakpoints({"model": "m", "messages": later})["messages"]
    assert [m.get("cache_control") for m in moved] == [None, CC, None, None, CC]
    parts = [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]
    assert place_breakpoints({"model": "m", "messages": parts})["messages"][0]["content"][1]["cache_control"] == CC
    # an assistant prefill is not a turn to cache up to; a system prompt alone is
    prefill = place_breakpoints({"model": "m", "messages": [*turn, {"role": "assistant", "content": "Sure"}]})
    assert [m.get("cache_control") for m in prefill["messages"]] == [None, CC, None, None]
    assert [m.get("cache_control") for m in place_breakpoints({"model": "m", "messages": system})["messages"]] == [
        None,
        CC,
    ]
