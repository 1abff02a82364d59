"""Reading named server-sent events, and writing chat-completion chunks, for translator tests."""

from __future__ import annotations

from typing import Any

import orjson


def parse(events: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in events:
        lines = event.decode().strip().split("\n")
        kind = lines[0].removeprefix("event: ")
        out.append((kind, orjson.loads(lines[1].removeprefix("data: "))))
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    payload: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "model": "up-model", "choices": choices}
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def tool_delta(index: int, arguments: str, name: str | None = None, call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if name is not None:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


DONE = b"data: [DONE]\n\n"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
