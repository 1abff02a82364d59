"""What a Messages request carries that chat completions have no field for, carried into its
chat-completions form for Anthropic deployments: prompt-cache breakpoints, extended thinking and
failed tool results.

Failed tool results: a ``tool_result`` block's ``is_error`` tells the model the tool failed
(docs.anthropic.com, "Tool use": "is_error": true). OpenAI's tool message has no such field: the
tool message made of that block gets ``is_error`` (named under the marker like the others), and
the litellm provider sets it on the ``tool_result`` litellm writes for that message.

Thinking: the request's ``thinking`` and the ``thinking`` / ``redacted_thinking`` blocks of earlier
assistant turns (Anthropic needs them back, signatures intact, when a thinking turn used a tool)
go where litellm's Anthropic transformation reads them: a ``thinking`` parameter and an assistant
message's ``thinking_blocks``.

Cache breakpoints: Anthropic caches the prompt prefix that ends at each block marked ``cache_control`` (the prefix
runs tools, then system, then messages), and allows at most four marks in a request
(docs.anthropic.com, "Prompt caching"). litellm's Messages adapter drops the marks; its
OpenAI-to-Anthropic transformation reads them back from content parts, tool messages' parts and
tools. So the marks are located in the Messages request, the adapter translates the rest, and
:func:`carry` puts each mark on the part the adapter made of its block. The adapter's mapping
is checked as it is walked (a user message's tool results become tool messages, in order, and
its other blocks one user message after them); a mark whose block cannot be found is not guessed
at but reported, so the request is served with a shorter cached prefix and says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.providers.anthropic_fields import MARKER
from gateway.translate.check import FieldError

__all__ = ["MAX_BREAKPOINTS", "Extras", "carry", "find_extras"]

MAX_BREAKPOINTS: Final = 4


@dataclass
class Extras:
    """Where the chat body gets each ``cache_control`` ((message index, part index) or a tool
    index), the request's ``thinking``, and assistant messages' thinking blocks by index."""

    parts: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    whole: dict[int, dict[str, Any]] = field(default_factory=dict)  # a message whose text is one part
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)  # marks whose block the chat form has no place for
    thinking: dict[str, Any] | None = None
    thinking_blocks: dict[int, list[Any]] = field(default_factory=dict)
    failed_tools: frozenset[str] = frozenset()  # tool_use ids whose result is marked is_error

    @property
    def marks(self) -> int:
        return len(self.parts) + len(self.whole) + len(self.tools)

    @property
    def fields(self) -> list[str]:
        """The names this request carries, as :data:`MARKER` lists them."""
        thinks = self.thinking is not None or self.thinking_blocks
        return (
            ["cache_control"] * bool(self.marks) + ["thinking"] * bool(thinks) + ["is_error"] * bool(self.failed_tools)
        )


def find_extras(body: Mapping[str, Any], chat: Mapping[str, Any], thinking_blocks: dict[int, list[Any]]) -> Extras:
    """The extras of the Messages ``body``, placed in the adapter's ``chat`` form of it (whose
    assistant messages had ``thinking_blocks``); more breakpoints than Anthropic allows is the
    client's error, found before anything is sent."""
    count = _count(body)
    if count > MAX_BREAKPOINTS:
        raise FieldError(
            "cache_control",
            f"at most {MAX_BREAKPOINTS} blocks may carry cache_control (Anthropic's limit); found {count}",
        )
    thinking = body.get("thinking")
    marks = Extras(
        thinking=dict(thinking) if isinstance(thinking, Mapping) else None,
        thinking_blocks=thinking_blocks,
        failed_tools=_failed_tools(body),
    )
    if count == 0:
        return marks
    for i, tool in enumerate(body.get("tools") or []):
        if tool.get("cache_control"):
            marks.tools[i] = tool["cache_control"]
    messages = chat["messages"]
    at = 0
    system = body.get("system")
    if system is not None:
        if isinstance(system, list):
            _place(marks, messages, 0, "system", system)
        at = 1
    for i, message in enumerate(body["messages"]):
        at = _walk(marks, messages, at, i, message)
        if at < 0:
            break
    return marks


def carry(chat: dict[str, Any], marks: Extras) -> dict[str, Any]:
    """The chat body with the extras on it (the messages, parts and tools changed are copies) and
    named under :data:`MARKER`; unchanged without any."""
    fields = marks.fields
    if not fields:
        return chat
    messages = list(chat["messages"])
    for i, blocks in marks.thinking_blocks.items():
        messages[i] = {**messages[i], "thinking_blocks": blocks}
    for i, cc in marks.whole.items():
        if messages[i].get("role") == "tool":
            # litellm puts a tool message's own mark on its tool_result and keeps the text as
            # it is: the prefix is byte-for-byte the next turn's, where the mark has moved on
            # (as a one-part list it would not be, and every other turn would miss the cache).
            messages[i] = {**messages[i], "cache_control": cc}
            continue
        text = messages[i].get("content")
        messages[i] = {**messages[i], "content": [{"type": "text", "text": text, "cache_control": cc}]}
    for i, message in enumerate(messages):
        if message.get("role") == "tool" and message.get("tool_call_id") in marks.failed_tools:
            messages[i] = {**message, "is_error": True}
    for (i, j), cc in marks.parts.items():
        parts = list(messages[i]["content"])
        parts[j] = {**parts[j], "cache_control": cc}
        messages[i] = {**messages[i], "content": parts}
    out = {**chat, "messages": messages, MARKER: fields}
    if marks.thinking is not None:
        out["thinking"] = marks.thinking
    if marks.tools:
        out["tools"] = [
            ({**t, "cache_control": marks.tools[k]} if k in marks.tools else t) for k, t in enumerate(chat["tools"])
        ]
    return out


def _failed_tools(body: Mapping[str, Any]) -> frozenset[str]:
    failed = set()
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("is_error") is True:
                failed.add(str(block.get("tool_use_id")))
    return frozenset(failed)


def _count(body: Mapping[str, Any]) -> int:
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    blocks += system if isinstance(system, list) else []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            blocks.append(block)
            inner = block.get("content") if isinstance(block, dict) and block.get("type") == "tool_result" else None
            blocks += inner if isinstance(inner, list) else []
    return sum(1 for b in blocks if isinstance(b, dict) and b.get("cache_control"))


def _mark_of(block: Mapping[str, Any]) -> dict[str, Any] | None:
    """A block's mark; a tool result's may sit on its last inner block instead."""
    if block.get("cache_control"):
        return dict(block["cache_control"])
    inner = block.get("content") if block.get("type") == "tool_result" else None
    if isinstance(inner, list) and inner and isinstance(inner[-1], dict) and inner[-1].get("cache_control"):
        return dict(inner[-1]["cache_control"])
    return None


def _place(marks: Extras, messages: Sequence[Any], at: int, role: str, blocks: Sequence[Any]) -> None:
    """Marks of ``blocks``, which the adapter made into message ``at``'s parts one for one."""
    target = messages[at] if at < len(messages) else {}
    parts = target.get("content")
    marked = [(j, cc) for j, b in enumerate(blocks) if isinstance(b, dict) and (cc := _mark_of(b)) is not None]
    if not marked:
        return
    if target.get("role") != role:
        marks.lost.append(f"{role}: the translated request has no {role} message there")
        return
    if isinstance(parts, list) and len(parts) == len(blocks):
        for j, cc in marked:
            marks.parts[(at, j)] = cc
    elif isinstance(parts, str) and parts:
        marks.whole[at] = marked[-1][1]
    else:
        marks.lost.append(f"{role} message {at}: its blocks were merged")


def _walk(marks: Extras, messages: Sequence[Any], at: int, i: int, message: Mapping[str, Any]) -> int:
    """Place the marks of Messages message ``i``; the index of the chat message after it (-1:
    the mapping is not what was expected, and the remaining marks are not placed)."""
    content = message.get("content")
    blocks = content if isinstance(content, list) else []
    if message.get("role") == "assistant":
        _place(marks, messages, at, "assistant", blocks)
        return at + 1
    results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
    others = [b for b in blocks if not (isinstance(b, dict) and b.get("type") == "tool_result")]
    for k, result in enumerate(results):
        target = messages[at + k] if at + k < len(messages) else {}
        if target.get("role") != "tool" or target.get("tool_call_id") != result.get("tool_use_id"):
            marks.lost.append(f"messages[{i}]: its tool results were not translated one for one")
            return -1
        cc = _mark_of(result)
        if cc is not None:
            parts = target.get("content")
            if isinstance(parts, str):
                marks.whole[at + k] = cc
            elif isinstance(parts, list) and parts:
                marks.parts[(at + k, len(parts) - 1)] = cc
            else:
                marks.lost.append(f"messages[{i}]: a marked tool result has no content to mark")
    at += len(results)
    if others or not results:
        _place(marks, messages, at, "user", others)
        at += 1
    return at
