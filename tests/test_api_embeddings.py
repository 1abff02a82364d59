"""POST /v1/embeddings end to end: the real openai SDK, the policy's pinned embeddings
deployments on the fake provider over real HTTP, keys and the ledger as for chat."""

from __future__ import annotations

import concurrent.futures
import math

import httpx
import openai
import pytest

from gateway.providers.fake_upstream import fake_embedding
from tests.conftest import Gateway, GatewayFactory, fake_stats, three_tier_policy

MASTER = "sk-master-embeddings-0123456789"


def embeddings_policy(fake_url: str, default: str | None = "embed-small", retries: int = 0) -> str:
    default_line = f"default: {default}" if default else ""
    return three_tier_policy(
        fake_url,
        extra=f"""embeddings:
      deployments:
        - {{name: embed-small, model: openai/fake-embed-small, api_base: "{fake_url}/v1",
            price: {{input_per_1m: 0.02, output_per_1m: 0}}}}
        - {{name: embed-broken, model: openai/error-500, api_base: "{fake_url}/v1", max_retries: {retries},
            price: {{input_per_1m: 0.1, output_per_1m: 0}}}}
      {default_line}""",
    )


def client(gw: Gateway, key: str = "sk-local") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def _embed_status(gw: Gateway, key: str, text: str) -> int:
    try:
        client(gw, key).embeddings.create(model="embed-small", input=text)
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def test_vectors_usage_cost_and_ledger(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(embeddings_policy(fake_upstream))
    # The SDK asks for base64 unless told otherwise and decodes it: both encodings pass through.
    raw = client(gw).embeddings.with_raw_response.create(
        model="embed-small", input=["hello world", "bye"], dimensions=32
    )
    result = raw.parse()
    assert [len(d.embedding) for d in result.data] == [32, 32]
    expected = fake_embedding("fake-embed-small", "hello world", 32)
    assert result.data[0].embedding == pytest.approx(expected, abs=1e-6)
    assert math.sqrt(sum(v * v for v in result.data[1].embedding)) == pytest.approx(1.0, abs=1e-5)
    plain = client(gw).embeddings.create(
        model="embed-small", input="hello world", dimensions=32, encoding_format="float"
    )
    assert plain.data[0].embedding == pytest.approx(expected, abs=1e-6)
    assert fake_stats(fake_upstream)["last_request"]["body"]["model"] == "fake-embed-small"

    assert raw.headers["x-tierwise-deployment"] == "embed-small"
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert row["api"] == "embeddings" and row["status_code"] == 200 and row["tier"] is None
    assert row["prompt_tokens"] == result.usage.prompt_tokens == 3 and row["completion_tokens"] == 0
    assert row["cost_usd"] == pytest.approx(3 * 0.02 / 1e6) == float(raw.headers["x-tierwise-cost-usd"])
    assert row["frontier_cost_usd"] == row["cost_usd"]  # pinned: no routing saving is claimed


def test_model_resolution(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(embeddings_policy(fake_upstream))
    # An app that hard-codes OpenAI's model name gets the policy's default, and is told so.
    raw = client(gw).embeddings.with_raw_response.create(model="text-embedding-3-small", input="x")
    assert raw.headers["x-tierwise-deployment"] == "embed-small"
    assert "served by the default" in raw.headers["x-tierwise-fallbacks"]
    # A model name HTTP/1.1 headers cannot carry (a 500, found by the fuzzer) is quoted escaped
    raw = client(gw).embeddings.with_raw_response.create(model="emb\U00029c53\r\nx-evil: 1", input="x")
    assert raw.http_response.status_code == 200 and "x-evil" not in raw.headers
    assert "emb\\U00029c53\\r\\nx-evil: 1" in raw.headers["x-tierwise-fallbacks"]

    gw = start_gateway(embeddings_policy(fake_upstream, default=None))
    with pytest.raises(openai.NotFoundError) as info:
        client(gw).embeddings.create(model="text-embedding-3-small", input="x")
    assert "embed-small" in info.value.message
    assert client(gw).embeddings.create(model="fake-embed-small", input="x").model == "fake-embed-small"


def test_upstream_failure_is_retried_on_the_same_deployment_only(
    start_gateway: GatewayFactory, fake_upstream: str
) -> None:
    gw = start_gateway(embeddings_policy(fake_upstream, retries=1))
    with pytest.raises(openai.InternalServerError) as info:
        client(gw).embeddings.create(model="embed-broken", input="x")
    assert info.value.status_code == 502 and info.value.body["code"] == "upstream_error"  # type: ignore[index]
    row = gw.rows("api = 'embeddings'")[0]
    assert row["status_code"] == 502 and row["attempts"] == 2 and row["deployment"] == "embed-broken"
    assert row["cost_usd"] == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"api_base": "http://evil"}, "api_base"),
        ({"input": []}, "input"),
        ({"input": {"text": "x"}}, "input"),
        ({"dimensions": "8"}, "dimensions"),
        ({"encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_input_gets_openai_error_envelope(
    start_gateway: GatewayFactory, fake_upstream: str, body: dict[str, object], param: str
) -> None:
    gw = start_gateway(embeddings_policy(fake_upstream))
    r = httpx.post(gw.v1 + "/embeddings", json={"model": "embed-small", "input": "x", **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert gw.rows("api = 'embeddings'")[0]["status_code"] == 400


def test_keys_rate_limits_and_budgets_apply(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(embeddings_policy(fake_upstream), master_key=MASTER)
    admin = {"authorization": f"Bearer {MASTER}"}

    def key(**fields: object) -> str:
        created = httpx.post(gw.url + "/admin/keys", json={"owner": "rag", **fields}, headers=admin)
        token: str = created.json()["key"]
        return token

    limited = key(rpm_limit=1)
    with pytest.raises(openai.AuthenticationError):
        client(gw, "sk-not-a-key").embeddings.create(model="embed-small", input="x")
    client(gw, limited).embeddings.create(model="embed-small", input="x")
    with pytest.raises(openai.RateLimitError):
        client(gw, limited).embeddings.create(model="embed-small", input="x")

    broke = key(budget_daily_usd=0.001)
    with pytest.raises(openai.RateLimitError) as info:  # worst case of 250k characters: $0.0025
        client(gw, broke).embeddings.create(model="embed-small", input="word " * 50_000)
    assert info.value.body["code"] == "insufficient_quota"  # type: ignore[index]

    # a token limit holds each call's worst case at admission, so concurrent calls cannot overrun it
    tpm = key(tpm_limit=3000)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: _embed_status(gw, tpm, "x " * 2000), range(20)))
    assert results.count(200) == 1 and set(results) == {200, 429}

    chat_only = key(allowed_routes=["cheap"])
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, chat_only).embeddings.create(model="embed-small", input="x")
    allowed = key(allowed_routes=["cheap", "embeddings"])
    assert client(gw, allowed).embeddings.create(model="embed-small", input="x").data
