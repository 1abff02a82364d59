"""Bad input gets OpenAI's error envelope with the right status and names the field. In process
(the app through Starlette's TestClient, the fake provider for tiers): what is checked here is
the gateway's own answer, not a socket's; the provider's headers are checked over real HTTP."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest
from starlette.testclient import TestClient

from tests.conftest import REPO, GatewayFactory, fake_stats, three_tier_policy


def assert_envelope(
    r: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict[str, str]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in r.text
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return dict(err)


@pytest.fixture
def gw(in_process_gateway: Callable[[str], TestClient]) -> TestClient:
    return in_process_gateway(three_tier_policy(None, extra="limits: {max_body_bytes: 20000}"))


CHAT = "/v1/chat/completions"


def test_truncated_json(gw: TestClient) -> None:
    r = gw.post(
        CHAT,
        content=b'{"model": "auto", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in assert_envelope(r, 400)["message"]


JSON = {"content-type": "application/json"}


def test_not_an_object_and_empty(gw: TestClient) -> None:
    assert_envelope(gw.post(CHAT, content=b"[1,2]", headers=JSON), 400)
    assert_envelope(gw.post(CHAT, content=b"", headers=JSON), 400)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_does_not_say_json_is_not_parsed(gw: TestClient, content_type: str | None) -> None:
    """Browsers send these cross-origin without a preflight: the gateway must not act on them."""
    body = b'{"model": "cheap", "messages": [{"role": "user", "content": "x"}]}'
    headers = {"content-type": content_type} if content_type else {}
    r = gw.post(CHAT, content=body, headers=headers)
    assert_envelope(r, 415, code="unsupported_media_type")
    ok = gw.post(CHAT, content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "auto", "messages": "hello"}, "messages"),
        ({"model": "auto", "messages": []}, "messages"),
        ({"model": "auto", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        ({"model": 42, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ],
)
def test_wrong_fields_name_the_field(gw: TestClient, body: dict[str, object], param: str) -> None:
    err = assert_envelope(gw.post(CHAT, json=body), 400, param=param)
    assert err["type"] == "invalid_request_error"


def test_huge_body_is_413(gw: TestClient) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "x" * 50_000}]}
    assert_envelope(gw.post(CHAT, json=body), 413, code="request_too_large")


def test_unknown_model_is_404_with_the_sdk(gw: TestClient) -> None:
    c = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="sk-local", max_retries=0, http_client=gw)
    with pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    assert_envelope(info.value.response, 404, code="model_not_found", param="model")
    # it says what to ask for instead
    assert "ask for one of auto, cheap" in info.value.message and "tier/frontier" in info.value.message
    with pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="tier/nope", messages=[{"role": "user", "content": "x"}])
    assert "tier/local" in info.value.message


@pytest.mark.parametrize("key", ["api_base", "base_url", "api_key", "extra_headers"])
def test_request_cannot_set_upstream_or_credentials(gw: TestClient, key: str) -> None:
    body = {"model": "cheap", "messages": [{"role": "user", "content": "x"}], key: "http://evil.example"}
    assert_envelope(gw.post(CHAT, json=body), 400, code="unsupported_parameter", param=key)


def test_client_headers_never_reach_the_provider(
    start_gateway: GatewayFactory, fake_upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_TEST_UPSTREAM_KEY", "sk-policy-key")
    policy = three_tier_policy(fake_upstream).replace(
        "name: local-a, model: openai/echo,",
        "name: local-a, model: openai/echo, api_key_env: TIERWISE_TEST_UPSTREAM_KEY,",
    )
    gw = start_gateway(policy)
    r = httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": "cheap", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": "Bearer sk-client-secret", "x-forwarded-host": "evil", "openai-organization": "org"},
    )
    assert r.status_code == 200
    seen = fake_stats(fake_upstream)["last_request"]["headers"]
    assert seen["authorization"] == "Bearer sk-policy-key"
    assert "x-forwarded-host" not in seen and "openai-organization" not in seen


def test_unknown_path_and_method(gw: TestClient) -> None:
    assert_envelope(gw.get("/v1/nothing-here"), 404)
    assert_envelope(gw.get(CHAT), 405)
    # an OpenAI client whose base URL lacks /v1 is told so
    body = {"model": "cheap", "messages": [{"role": "user", "content": "hi"}]}
    r = gw.post("/chat/completions", json=body)
    assert_envelope(r, 404)
    assert "the API is under /v1" in r.json()["error"]["message"]
    assert "under /v1" not in gw.get("/nothing-here").json()["error"]["message"]


def test_models_and_health(in_process_gateway: Callable[[str], TestClient]) -> None:
    gw = in_process_gateway((REPO / "policies" / "fake.yaml").read_text())
    models = gw.get("/v1/models").json()["data"]
    ids = {m["id"]: m for m in models}
    assert {"auto", "cheap", "best", "tier/local", "tier/mid", "tier/frontier", "fake-mid"} <= set(ids)
    # fake answers are labelled as such
    assert ids["fake-mid"]["owned_by"] == "tierwise-fake" and ids["fake-mid"]["tierwise"]["fake"] is True
    assert gw.get("/healthz").json() == {"status": "ok"}
    ready = gw.get("/readyz").json()
    assert ready["ready"] is True and ready["tiers"] == {"local": True, "mid": True, "frontier": True}
    out = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="x", http_client=gw).chat.completions.create(
        model="best", messages=[{"role": "user", "content": "are you real?"}]
    )
    assert (out.choices[0].message.content or "").startswith("[fake echo]")
