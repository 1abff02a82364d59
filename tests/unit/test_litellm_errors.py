"""How litellm's failures are classified: whose fault each is decides the status and the cooldown."""

from __future__ import annotations

import httpx
import pytest

from gateway.errors import UnsendableRequest, UpstreamConnectError, UpstreamHTTPError, UpstreamProtocolError
from gateway.policy.models import Deployment
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


def test_litellms_reason_goes_to_the_log_not_to_the_client(provider: LitellmProvider) -> None:
    """litellm words its APIConnectionError with what the upstream sent ("Original Response: ...")."""
    quoted = ValueError("Unable to get json response - Original Response: Traceback ... 10.1.2.3")
    mapped = provider._map_error(_connection_error(provider, quoted), None)
    assert "10.1.2.3" in str(mapped) and "10.1.2.3" not in mapped.to_envelope()["error"]["message"]


def test_a_refused_connection_is_the_deployments_fault_whatever_status_litellm_gives_it(
    provider: LitellmProvider,
) -> None:
    """litellm raises InternalServerError (500) for an Anthropic server that refuses the connection."""
    exc = provider._litellm.InternalServerError(message="Cannot connect", model="m", llm_provider="anthropic")
    exc.__cause__ = httpx.ConnectError("All connection attempts failed")  # as litellm chains it
    mapped = provider._map_error(exc, None)
    assert isinstance(mapped, UpstreamConnectError) and mapped.message == "the upstream could not be reached"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}', "too large"),
        ("<html>502 Bad Gateway nginx at 10.1.2.3</html>", None),
    ],
    ids=["json", "html"],
)
def test_a_rejection_relays_only_the_providers_json_error_message(
    provider: LitellmProvider, body: str, said: str | None
) -> None:
    lt = provider._litellm
    exc = lt.BadRequestError(message=f"AnthropicException - {body}", model="m", llm_provider="anthropic")
    mapped = provider._map_error(exc, None)
    assert isinstance(mapped, UpstreamHTTPError) and mapped.status == 400
    assert mapped.said is None if said is None else said in (mapped.said or "")
    assert "10.1.2.3" not in (mapped.said or "")


def test_the_start_up_self_check_translates_an_agents_turn_for_each_deployment(
    provider: LitellmProvider, caplog: pytest.LogCaptureFixture
) -> None:
    claude = Deployment(name="sonnet", model="anthropic/claude-sonnet-4-5")
    bedrock = Deployment(name="bedrock-claude", model="bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert provider.self_check([claude, bedrock]) == []
    assert "cannot be served" not in caplog.text


def test_the_self_check_names_a_module_litellm_needs_and_lacks(
    provider: LitellmProvider, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    def lacking(*_: object, **__: object) -> dict[str, object]:
        raise ModuleNotFoundError("No module named 'mcp'")

    monkeypatch.setattr(AnthropicConfig, "transform_request", lacking)
    claude = Deployment(name="sonnet", model="anthropic/claude-sonnet-4-5")
    assert provider.self_check([claude]) == ["sonnet: No module named 'mcp'"]
    assert "deployment sonnet cannot be served" in caplog.text and "ERROR" in caplog.text
