"""Chat-completion chunks in, the Messages API's streaming events out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.translate.anthropic.answer import STOP_REASONS, error_body, thinking_block, tool_name, usage_object
from gateway.translate.sse import DONE, chat_event, named_event

__all__ = ["MessageEvents"]


class MessageEvents:
    """Chat-completion chunks in, the Messages API's streaming events out: ``message_start``, a
    content block per text run or tool call (``text_delta`` / ``input_json_delta``),
    ``message_delta`` with the stop reason and usage, ``message_stop``; an error event from the
    relay becomes an ``error`` event."""

    def __init__(self, message_id: str, model: str, names: Mapping[str, str]) -> None:
        self._id = message_id
        self._model = model
        self._names = names
        self._started = False
        self._index = -1  # the open content block
        self._open: str | None = None  # its kind: "text" or the chat tool-call index as "tool:<i>"
        self._finish: str | None = None
        self._usage: Mapping[str, Any] = {}

    def start(self) -> list[bytes]:
        return []  # message_start waits for the first chunk, which names the model that answers

    def _message_start(self) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return named_event("message_start", {"type": "message_start", "message": message})

    def feed(self, raw: bytes) -> list[bytes]:
        chunk = chat_event(raw)
        if chunk is None:
            return []
        out: list[bytes] = []
        if not self._started:
            if isinstance(chunk, dict):
                self._model = str(chunk.get("model") or self._model)
            out.append(self._message_start())
        if chunk == DONE:
            return [*out, *self._stop()]
        assert isinstance(chunk, dict)
        if isinstance(chunk.get("error"), dict):
            return [*out, named_event("error", error_body(502, str(chunk["error"].get("message", ""))))]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for block in delta.get("thinking_blocks") or []:
                out.extend(self._thinking(block))
            text = delta.get("content")
            if text:
                out.extend(self._block("text", {"type": "text", "text": ""}))
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                kind = f"tool:{call.get('index', 0)}"
                if kind != self._open:
                    name = tool_name(function.get("name") or "", self._names)
                    out.extend(
                        self._block(kind, {"type": "tool_use", "id": call.get("id", ""), "name": name, "input": {}})
                    )
                if function.get("arguments"):
                    out.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _thinking(self, block: Mapping[str, Any]) -> list[bytes]:
        """litellm streams a thinking block as pieces: its text, then its signature."""
        if block.get("type") == "redacted_thinking":
            out = self._block("redacted", thinking_block(block))
            self._open = "redacted:whole"  # a redacted block comes whole: the next one opens anew
            return out
        out = self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        if block.get("thinking"):
            out.append(self._delta({"type": "thinking_delta", "thinking": block["thinking"]}))
        if block.get("signature"):
            out.append(self._delta({"type": "signature_delta", "signature": block["signature"]}))
        return out

    def _block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        if kind == self._open:
            return []
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(
            named_event(
                "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
            )
        )
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return named_event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [named_event("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _stop(self) -> list[bytes]:
        out = self._close()
        delta = {"stop_reason": STOP_REASONS.get(self._finish or "stop", "end_turn"), "stop_sequence": None}
        out.append(
            named_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage_object(self._usage)})
        )
        out.append(named_event("message_stop", {"type": "message_stop"}))
        return out
