"""What every provider gives the dispatcher, and the upstream failures it may raise.

ProviderError                 an upstream call failed
├── UpstreamHTTPError         the upstream answered with an error status
├── UpstreamTimeout           no answer in time
├── UpstreamConnectError      could not reach it
└── UpstreamProtocolError     it answered with something that is not OpenAI's format
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.policy.models import Deployment
from gateway.usage import Usage

__all__ = [
    "Completion",
    "Provider",
    "ProviderError",
    "UpstreamConnectError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamStream",
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


@dataclass
class Completion:
    body: bytes  # the JSON to send back, as the upstream produced it where possible
    usage: Usage | None


@dataclass
class UpstreamStream:
    """An opened stream: ``events`` yields complete SSE events (with their trailing blank line).

    The provider fills ``usage`` and ``completion_chars`` as events pass, so the caller can
    price the stream even when the client goes away before the end.
    """

    events: AsyncIterator[bytes]
    usage: Usage | None = None
    completion_chars: int = 0
    done: bool = False
    error: str | None = None


class Provider(abc.ABC):
    @abc.abstractmethod
    async def complete(self, deployment: Deployment, api_key: str | None, body: dict[str, Any]) -> Completion: ...

    @abc.abstractmethod
    async def open_stream(
        self, deployment: Deployment, api_key: str | None, body: dict[str, Any], include_usage: bool
    ) -> UpstreamStream: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass
