"""Fields only Anthropic deployments take: prompt-cache breakpoints, extended thinking and failed
tool results.

A Messages API request may carry ``cache_control`` (on system blocks, tools and content blocks),
``thinking``, earlier turns' thinking blocks and tool results' ``is_error``. The translator puts them
into the chat body where litellm's Anthropic transformation reads them (``cache_control`` on
content parts and tools, ``thinking`` as a parameter, ``thinking_blocks`` on assistant messages;
``is_error`` on a tool message, which the litellm provider writes onto its ``tool_result``) and names them under
:data:`MARKER`, a key no client can send (the chat API's
allowlist refuses it) and no provider forwards (they send only chat fields). Each deployment
gets them only if it is an Anthropic one; any other gets the body without them, and the answer
says so (``x-tierwise-dropped``): an allowlist per deployment kind.
"""

from __future__ import annotations

from typing import Any

from gateway.policy.models import Deployment

__all__ = ["MARKER", "for_deployment", "place_breakpoints", "takes"]

MARKER = "_anthropic_fields"  # -> the names of the fields the body carries, e.g. ["cache_control"]


def takes(deployment: Deployment) -> bool:
    """Whether the deployment is Anthropic's API through litellm (which reads these fields)."""
    return deployment.provider == "litellm" and deployment.model.startswith("anthropic/")


def for_deployment(body: dict[str, Any], deployment: Deployment) -> tuple[dict[str, Any], list[str]]:
    """The body as ``deployment`` may get it, and the names of the fields taken out for it."""
    fields: list[str] = body.get(MARKER) or []
    if not fields or takes(deployment):
        return body, []
    out = {k: v for k, v in body.items() if k not in ("thinking", MARKER)}
    out["messages"] = [_plain(m) for m in body["messages"]]
    if "cache_control" in fields and "tools" in body:
        out["tools"] = [{k: v for k, v in t.items() if k != "cache_control"} for t in body["tools"]]
    return out, list(fields)


_EPHEMERAL = {"type": "ephemeral"}


def place_breakpoints(body: dict[str, Any]) -> dict[str, Any]:
    """The body with breakpoints on the last tool, the end of the leading system messages and the
    latest user or tool turn, for an Anthropic deployment (at most 3 of Anthropic's 4). A string's
    mark goes on its message, which litellm turns into the same block as unmarked: the prefix stays
    byte for byte the next turn's."""
    out = dict(body)
    tools = body.get("tools")
    if tools:
        out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": _EPHEMERAL}]
    messages = list(body["messages"])
    system = -1
    while system + 1 < len(messages) and messages[system + 1].get("role") in ("system", "developer"):
        system += 1
    if system >= 0:
        messages[system] = _marked(messages[system])
    if len(messages) - 1 > system and messages[-1].get("role") in ("user", "tool"):
        messages[-1] = _marked(messages[-1])
    out["messages"] = messages
    return out


def _marked(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list) and content and isinstance(content[-1], dict):
        return {**message, "content": [*content[:-1], {**content[-1], "cache_control": _EPHEMERAL}]}
    return {**message, "cache_control": _EPHEMERAL}


_ANTHROPIC_ONLY = frozenset({"thinking_blocks", "cache_control", "is_error"})


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message without thinking blocks, breakpoints and is_error (itself if it has none)."""
    content = message.get("content")
    marked = isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content)
    if not marked and not _ANTHROPIC_ONLY.intersection(message):
        return message
    # a tool message's breakpoint and is_error sit on the message itself (see translate/anthropic/extras.py)
    out = {k: v for k, v in message.items() if k not in _ANTHROPIC_ONLY}
    if marked and isinstance(content, list):
        out["content"] = [
            {k: v for k, v in p.items() if k != "cache_control"} if isinstance(p, dict) else p for p in content
        ]
    return out
