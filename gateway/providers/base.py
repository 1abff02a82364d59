"""What every provider gives the dispatcher. The failures a provider raises are
:class:`gateway.errors.UpstreamError` and its subclasses."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import UnsendableRequest
from gateway.policy.models import Deployment
from gateway.usage import Usage, usage_of

__all__ = ["Completion", "Provider", "UpstreamStream", "Usage"]


@dataclass
class Completion:
    body: bytes  # the JSON to send back, as the upstream produced it where possible
    usage: Usage | None
    payload: dict[str, Any]  # ``body`` parsed, once, by the provider that checked it


@dataclass
class UpstreamStream:
    """An opened stream: ``events`` yields complete SSE events (with their trailing blank line).

    The provider reports each chunk to ``observe`` as it passes, so the caller can price the
    stream even when the client goes away before the end, and check the answer (the first
    choice's text is kept up to ``collect`` characters, and its tool calls when ``collect`` is set).
    """

    events: AsyncIterator[bytes]
    usage: Usage | None = None
    completion_chars: int = 0
    done: bool = False
    error: str | None = None
    finish_reason: str | None = None
    collect: int = 0
    text: str = ""
    tool_calls: dict[int, list[str]] = field(default_factory=dict)  # index -> [name, arguments]

    def observe(self, payload: dict[str, Any]) -> None:
        """Account for one chunk (an OpenAI ``chat.completion.chunk``)."""
        usage = usage_of(payload)
        if usage is not None:
            self.usage = usage
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            first = choice.get("index", 0) == 0
            content = delta.get("content")
            if isinstance(content, str):
                self.completion_chars += len(content)
                if first and len(self.text) < self.collect:
                    self.text += content
            for call in delta.get("tool_calls") or []:
                fn = call.get("function") or {}
                args = str(fn.get("arguments") or "")
                self.completion_chars += len(args)
                if first and self.collect:
                    slot = self.tool_calls.setdefault(int(call.get("index", 0)), ["", ""])
                    slot[0] += str(fn.get("name") or "")
                    slot[1] += args
            if first and choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]


class Provider(abc.ABC):
    @abc.abstractmethod
    async def complete(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion: ...

    async def embed(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion:
        """An embeddings request (OpenAI's shape, checked by the caller); the answer's ``payload``
        has ``data``, its ``usage`` the prompt tokens."""
        raise UnsendableRequest(message="it does not serve embeddings")

    @abc.abstractmethod
    async def open_stream(
        self, deployment: Deployment, api_key: str | None, body: dict[str, Any], include_usage: bool
    ) -> UpstreamStream: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass
