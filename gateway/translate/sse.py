"""Reading the chat-completion SSE events a relay yields, and writing named events."""

from __future__ import annotations

from typing import Any, Final

import orjson

__all__ = ["DONE", "chat_event", "named_event"]

DONE: Final = "[DONE]"


def chat_event(event: bytes) -> dict[str, Any] | str | None:
    """One relayed event: its JSON object, ``DONE``, or None (a comment, or not an object)."""
    data = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
    if not data:
        return None
    if data == b"[DONE]":
        return DONE
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # the provider already ends a malformed stream with an error event
    return payload if isinstance(payload, dict) else None


def named_event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
