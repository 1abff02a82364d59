"""The local tier: availability logic with the fake provider, and a real SmolLM2 end to end."""

from __future__ import annotations

import json
import os

import httpx
import openai
import pytest

from gateway.settings import LocalModelSettings
from tests.conftest import REPO, GatewayFactory, free_port


def _policy(fake: str, local_base: str, extra_mid: str = "") -> str:
    return f"""
    version: 1
    tiers:
      - name: local
        deployments:
          - {{name: local-a, model: openai/echo, api_base: "{local_base}", max_retries: 0, price: {{input_per_1m: 0, output_per_1m: 0}}}}
      - name: mid
        deployments:
          - {{name: mid-keyed, model: openai/echo, api_base: "{fake}/v1", api_key_env: TIERWISE_TEST_ABSENT_KEY,
              price: {{input_per_1m: 1, output_per_1m: 1}}}}{extra_mid}
      - name: frontier
        deployments:
          - {{name: frontier-keyed, model: openai/echo, api_base: "{fake}/v1", api_key_env: TIERWISE_TEST_ABSENT_KEY,
              price: {{input_per_1m: 5, output_per_1m: 5}}}}
    routes:
      - {{name: m, tier: mid}}
      - {{name: cheap, tier: local}}
    """


def test_tier_without_key_is_unavailable_and_nearest_serves(
    start_gateway: GatewayFactory, fake_upstream: str, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ.pop("TIERWISE_TEST_ABSENT_KEY", None)
    gw = start_gateway(_policy(fake_upstream, f"{fake_upstream}/v1"))
    models = {m["id"]: m for m in httpx.get(gw.v1 + "/models").json()["data"]}
    assert models["mid-keyed"]["tierwise"]["available"] is False
    assert "TIERWISE_TEST_ABSENT_KEY" in models["mid-keyed"]["tierwise"]["unavailable_reason"]
    assert models["tier/local"]["tierwise"]["available"] is True
    ready = httpx.get(gw.url + "/readyz").json()
    assert ready["ready"] is True and ready["tiers"] == {"local": True, "mid": False, "frontier": False}
    assert "tier mid has no available deployment" in ready["degraded"]
    # asking for mid: nothing above is available either, so the nearest below serves, and the ledger says so
    raw = openai.OpenAI(base_url=gw.v1, api_key="x").chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-tierwise-tier"] == "local"
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert json.loads(row["fallbacks"]) == ["tier mid unavailable -> local"]
    # a deployment asked for by name is never silently called without its key
    with pytest.raises(openai.APIStatusError) as err:
        openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0).chat.completions.create(
            model="mid-keyed", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 503 and "mid-keyed` is unavailable" in err.value.message
    assert any("only tier local is available" in r.message for r in caplog.records)


def test_local_server_down_is_skipped_and_comes_back(
    start_gateway: GatewayFactory, fake_upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_TEST_ABSENT_KEY", "present")
    closed = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(_policy(fake_upstream, closed))
    ready = httpx.get(gw.url + "/readyz").json()
    assert ready["tiers"]["local"] is False
    models = {m["id"]: m for m in httpx.get(gw.v1 + "/models").json()["data"]}
    assert "not answering" in models["local-a"]["tierwise"]["unavailable_reason"]
    raw = openai.OpenAI(base_url=gw.v1, api_key="x").chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-tierwise-tier"] == "mid"  # up first: quality is kept


def test_local_server_that_answers_late_stays_in_use_until_it_keeps_timing_out(
    start_gateway: GatewayFactory, fake_upstream: str
) -> None:
    # A listener that never answers: its probes time out, as a llama.cpp server busy generating does.
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        gw = start_gateway(
            _policy(fake_upstream, f"http://127.0.0.1:{silent.getsockname()[1]}/v1"),
            local=LocalModelSettings(probe_interval_s=0.1),
        )
        assert httpx.get(gw.url + "/readyz").json()["tiers"]["local"] is True  # one slow probe is not "down"
        deadline = time.monotonic() + 20
        while httpx.get(gw.url + "/readyz").json()["tiers"]["local"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert httpx.get(gw.url + "/readyz").json()["tiers"]["local"] is False  # three in a row are


@pytest.mark.local_model
def test_real_local_model_through_gateway(start_gateway: GatewayFactory, smollm2: str) -> None:
    policy = f"""
    version: 1
    tiers:
      - name: local
        deployments:
          - {{name: local-smollm2, model: openai/smollm2-135m-instruct, api_base: "{smollm2}", timeout_s: 120,
              price: {{input_per_1m: 0, output_per_1m: 0}}}}
      - name: frontier
        deployments:
          - {{name: fake-frontier, model: fake/echo, price: {{input_per_1m: 2.5, output_per_1m: 10}}}}
    routes: [{{name: auto, tier: local}}]
    """
    gw = start_gateway(policy)
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0, timeout=120)
    raw = c.chat.completions.with_raw_response.create(
        model="auto",
        max_tokens=24,
        temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    out = raw.parse()
    text = out.choices[0].message.content or ""
    assert text.strip() and not text.startswith("[fake")
    assert raw.headers["x-tierwise-deployment"] == "local-smollm2" and float(raw.headers["x-tierwise-cost-usd"]) == 0
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert out.usage is not None
    assert (row["prompt_tokens"], row["completion_tokens"]) == (out.usage.prompt_tokens, out.usage.completion_tokens)
    assert row["prompt_tokens"] > 5 and row["cost_usd"] == 0 and row["usage_estimated"] == 0
    assert row["frontier_cost_usd"] > 0  # what the same call would have cost at the frontier

    pieces = [
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(
            model="auto", stream=True, max_tokens=16, messages=[{"role": "user", "content": "Say hello."}]
        )
        if ch.choices
    ]
    assert "".join(pieces).strip()
    row = gw.rows("stream = 1")[0]
    assert row["status_code"] == 200 and row["completion_tokens"] > 0 and row["cost_usd"] == 0, {
        k: row[k] for k in ("tier", "deployment", "fallbacks")
    }


@pytest.mark.local_model
def test_structured_outputs_on_the_bundled_model(start_gateway: GatewayFactory, smollm2: str) -> None:
    """json_schema answered a 500 ("every upstream deployment failed"), retried twice: llama-cpp-python's
    server takes a schema in a json_object format. As the shipped policy declares, it now gets one,
    and its grammar holds the 135M model to the schema."""
    import json

    import pydantic

    shipped = (REPO / "policies" / "default.yaml").read_text()
    assert "structured_outputs: json_object_schema" in shipped
    policy = f"""
    version: 1
    tiers:
      - name: local
        deployments:
          - {{name: local-smollm2, model: openai/smollm2-135m-instruct, api_base: "{smollm2}", timeout_s: 120,
              max_retries: 0, structured_outputs: json_object_schema, price: {{input_per_1m: 0, output_per_1m: 0}}}}
    routes: [{{name: auto, tier: local}}]
    """
    gw = start_gateway(policy)
    c = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0, timeout=120)

    class City(pydantic.BaseModel):
        name: str
        country: str

    ask = [{"role": "user", "content": "Name a city and its country."}]
    done = c.chat.completions.parse(model="auto", messages=ask, response_format=City, max_tokens=48, temperature=0)
    assert isinstance(done.choices[0].message.parsed, City)
    parsed = c.responses.parse(
        model="auto", input="Name a city and its country.", text_format=City, max_output_tokens=48, temperature=0
    )
    assert isinstance(parsed.output_parsed, City)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    raw = c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Pick a number."}],
        response_format=fmt,  # type: ignore[arg-type]
        max_tokens=16,
        temperature=0,
    )
    assert isinstance(json.loads(raw.parse().choices[0].message.content or "")["n"], int)
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert row["status_code"] == 200 and row["checks"] is None and row["attempts"] == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["best", "tier/frontier"])
def test_a_request_served_below_the_tier_it_asked_for_says_so_in_its_headers(
    start_gateway: GatewayFactory, fake_upstream: str, monkeypatch: pytest.MonkeyPatch, model: str, stream: bool
) -> None:
    monkeypatch.delenv("TIERWISE_TEST_ABSENT_KEY", raising=False)
    policy = _policy(fake_upstream, f"{fake_upstream}/v1").replace(
        "routes:", "routes:\n      - {name: best, tier: frontier}"
    )
    gw = start_gateway(policy)
    client = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "x"}]
    if stream:
        with client.chat.completions.with_streaming_response.create(model=model, messages=messages, stream=True) as r:
            headers = r.headers
            assert "".join(ch.choices[0].delta.content or "" for ch in r.parse() if ch.choices)
    else:
        r = client.chat.completions.with_raw_response.create(model=model, messages=messages)
        headers = r.headers
    assert headers["x-tierwise-tier"] == "local"
    assert headers["x-tierwise-fallbacks"] == "tier frontier unavailable -> local"
