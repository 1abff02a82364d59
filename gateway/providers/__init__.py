"""Upstream providers: OpenAI-compatible passthrough, litellm translation, the built-in fake."""

from gateway.providers.base import (
    Completion,
    Provider,
    ProviderError,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamStream,
    UpstreamTimeout,
    Usage,
)

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
