"""Upstream providers: OpenAI-compatible passthrough, litellm translation, the built-in fake."""

from gateway.providers.base import Completion, Provider, UpstreamStream, Usage

__all__ = ["Completion", "Provider", "UpstreamStream", "Usage"]
