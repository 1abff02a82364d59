"""Chat-completion chunks in, the Responses API's streaming events out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.translate.responses.answer import call_item, message_item, response_object
from gateway.translate.sse import DONE, chat_event, named_event

__all__ = ["ResponseEvents"]


class ResponseEvents:
    """Chat-completion chunks in, the Responses API's streaming events out.

    ``start()`` opens the response; ``feed()`` takes each relayed chat event and returns the
    events it becomes: text becomes a message item (``output_text.delta``), each tool call a
    ``function_call`` item (argument deltas), and ``[DONE]`` closes the open items and completes
    the response with usage. An error event from the relay becomes an ``error`` event.
    """

    def __init__(self, request: Mapping[str, Any], response_id: str, created: int) -> None:
        self._request = request
        self._id = response_id
        self._created = created
        self._seq = 0
        self._model = str(request.get("model", ""))
        self._output: list[dict[str, Any]] = []
        self._text: dict[str, Any] | None = None  # the open message item
        self._text_parts: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> open function_call item
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return named_event(kind, payload)

    def _snapshot(self, status: str) -> dict[str, Any]:
        return response_object(
            self._request, self._id, self._created, self._model, self._output, self._finish, self._usage, status
        )

    def start(self) -> list[bytes]:
        snapshot = self._snapshot("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, raw: bytes) -> list[bytes]:
        chunk = chat_event(raw)
        if chunk is None:
            return []
        if chunk == DONE:
            return self._complete()
        assert isinstance(chunk, dict)
        if isinstance(chunk.get("error"), dict):
            err = chunk["error"]
            return [self._event("error", code=err.get("code"), message=str(err.get("message", "")), param=None)]
        self._model = str(chunk.get("model") or self._model)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        out: list[bytes] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.extend(self._text_delta(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out.extend(self._call_delta(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _text_delta(self, text: str) -> list[bytes]:
        out = []
        if self._text is None:
            out.extend(self._close_calls())
            self._text = message_item(self._id + f"_{len(self._output)}", "", status="in_progress")
            self._output.append(self._text)
            self._text_parts = []
            index = len(self._output) - 1
            out.append(self._event("response.output_item.added", output_index=index, item=dict(self._text)))
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._text["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        self._text_parts.append(text)
        index = self._output.index(self._text)
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self._text["id"],
                output_index=index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _call_delta(self, call: Mapping[str, Any]) -> list[bytes]:
        out = []
        key = int(call.get("index", 0))
        function = call.get("function") or {}
        item = self._calls.get(key)
        if item is None:
            out.extend(self._close_text())
            item = call_item(
                f"fc_{self._id[5:]}_{len(self._output)}",
                call.get("id", ""),
                function.get("name", ""),
                "",
                "in_progress",
            )
            self._calls[key] = item
            self._output.append(item)
            out.append(self._event("response.output_item.added", output_index=len(self._output) - 1, item=dict(item)))
        args = function.get("arguments")
        if args:
            item["arguments"] += args
            index = self._output.index(item)
            out.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=args
                )
            )
        return out

    def _close_text(self) -> list[bytes]:
        item = self._text
        if item is None:
            return []
        self._text = None
        text = "".join(self._text_parts)
        index = self._output.index(item)
        part = {"type": "output_text", "text": text, "annotations": []}
        item.update(status="completed", content=[part])
        return [
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._event(
                "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
            ),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def _close_calls(self) -> list[bytes]:
        out = []
        for item in self._calls.values():
            index = self._output.index(item)
            item["status"] = "completed"
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        self._calls.clear()
        return out

    def _complete(self) -> list[bytes]:
        out = [*self._close_text(), *self._close_calls()]
        snapshot = self._snapshot("")  # status from the finish reason
        kind = "response.incomplete" if snapshot["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, response=snapshot))
        return out
