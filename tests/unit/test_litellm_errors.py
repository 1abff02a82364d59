"""How litellm's failures are classified: whose fault each is decides the status and the cooldown."""

from __future__ import annotations

import pytest

from gateway.providers.base import UnsendableRequest, UpstreamProtocolError
from gateway.providers.litellm_provider import LitellmProvider


@pytest.fixture(scope="module")
def provider() -> LitellmProvider:
    return LitellmProvider()


def _connection_error(provider: LitellmProvider, cause: Exception) -> Exception:
    lt = provider._litellm
    try:
        try:
            raise cause
        except Exception:
            raise lt.APIConnectionError(message=str(cause), llm_provider="anthropic", model="m") from None
    except lt.APIConnectionError as exc:
        exc.__context__ = cause
        return exc


def test_a_module_missing_from_our_install_is_our_fault_not_the_clients(
    provider: LitellmProvider, caplog: pytest.LogCaptureFixture
) -> None:
    mapped = provider._map_error(_connection_error(provider, ModuleNotFoundError("No module named 'mcp'")), None)
    assert isinstance(mapped, UpstreamProtocolError) and mapped.retryable
    assert "mcp" in caplog.text and "gateway bug" in caplog.text


def test_a_request_litellm_cannot_translate_is_the_clients(provider: LitellmProvider) -> None:
    mapped = provider._map_error(_connection_error(provider, ValueError("bad tool name")), None)
    assert isinstance(mapped, UnsendableRequest) and not mapped.retryable
