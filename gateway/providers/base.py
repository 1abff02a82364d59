"""What every provider gives the dispatcher, and the upstream failures it may raise.

ProviderError                 an upstream call failed
├── UpstreamHTTPError         the upstream answered with an error status
├── UpstreamTimeout           no answer in time
├── UpstreamConnectError      could not reach it
├── UpstreamProtocolError     it answered with something that is not OpenAI's format
└── UnsendableRequest         the request cannot be put into the provider's format
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gateway.policy.models import Deployment
from gateway.usage import Usage, usage_of

__all__ = [
    "Completion",
    "Provider",
    "ProviderError",
    "UpstreamConnectError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamStream",
    "UnsendableRequest",
    "UpstreamTimeout",
    "Usage",
]


class ProviderError(Exception):
    """``public_message`` is what a client may read: typed, short, no upstream internals."""

    retryable = True
    public_message = "the upstream call failed"


class UpstreamHTTPError(ProviderError):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"upstream answered {status}: {message}")
        self.status = status
        self.upstream_message = message  # redacted by the provider; relayed only for a 4xx
        self.retry_after = retry_after
        self.public_message = f"the upstream answered {status}"
        # 408/409/429 and 5xx are worth another try; other 4xx will fail the same way again.
        self.retryable = status in (408, 409, 429) or status >= 500


class UpstreamTimeout(ProviderError):
    public_message = "the upstream timed out"


class UpstreamConnectError(ProviderError):
    public_message = "the upstream could not be reached"


class UpstreamProtocolError(ProviderError):
    public_message = "the upstream answered in an unexpected format"


class UnsendableRequest(ProviderError):
    """The request cannot be put into this provider's format (found before anything was sent):
    the request's fault, never the deployment's."""

    retryable = False
    public_message = "the request cannot be sent to this provider"


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
        raise UnsendableRequest(f"deployment {deployment.name} does not serve embeddings")

    @abc.abstractmethod
    async def open_stream(
        self, deployment: Deployment, api_key: str | None, body: dict[str, Any], include_usage: bool
    ) -> UpstreamStream: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass
