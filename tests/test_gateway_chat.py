"""The gateway end to end: the real openai client against the gateway on loopback, the fake
provider as upstream over real HTTP, the ledger read back from the real SQLite file."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import GatewayFactory, fake_stats, three_tier_policy


def client(gw_url: str, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw_url + "/v1", api_key="sk-local", max_retries=0, **kw)  # type: ignore[arg-type]


def test_sync_completion_headers_and_ledger(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream))
    raw = client(gw.url).chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "user", "content": "hello tierwise"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "[fake echo] hello tierwise"
    assert raw.headers["x-tierwise-tier"] == "local"
    assert raw.headers["x-tierwise-deployment"] == "local-a"
    assert float(raw.headers["x-tierwise-cost-usd"]) == 0.0
    rid = raw.headers["x-tierwise-request-id"]

    row = gw.rows("request_id = ?", (rid,))[0]
    assert row["tier"] == "local" and row["route"] == "cheap" and row["status_code"] == 200
    assert row["prompt_tokens"] == completion.usage.prompt_tokens  # type: ignore[union-attr]
    assert row["completion_tokens"] == completion.usage.completion_tokens  # type: ignore[union-attr]
    # Savings base: the same tokens at the frontier tier's price.
    expected = (row["prompt_tokens"] * 2.5 + row["completion_tokens"] * 10) / 1e6
    assert row["frontier_cost_usd"] == pytest.approx(expected)


def test_pinned_tier_and_deployment_names(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream))
    c = client(gw.url)
    raw = c.chat.completions.with_raw_response.create(
        model="tier/frontier", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-tierwise-tier"] == "frontier"
    cost = float(raw.headers["x-tierwise-cost-usd"])
    usage = raw.parse().usage
    assert usage is not None
    assert cost == pytest.approx((usage.prompt_tokens * 2.5 + usage.completion_tokens * 10) / 1e6)
    raw = c.chat.completions.with_raw_response.create(model="mid-a", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-tierwise-deployment"] == "mid-a"
    # auto without a router loaded falls back to the route's tier
    raw = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-tierwise-tier"] == "mid"


async def test_async_streaming_is_ledgered_from_usage_chunk(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream))
    aclient = openai.AsyncOpenAI(base_url=gw.v1, api_key="sk-local", max_retries=0)
    stream = await aclient.chat.completions.create(
        model="tier/mid", stream=True, messages=[{"role": "user", "content": "one two three"}]
    )
    text, usage_chunks = "", 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage_chunks += chunk.usage is not None
    assert text == "[fake echo] one two three"
    assert usage_chunks == 0  # the client did not ask for usage, so the upstream's usage chunk is not relayed
    row = gw.rows("stream = 1")[0]
    assert row["tier"] == "mid" and row["status_code"] == 200
    assert row["usage_estimated"] == 0 and row["completion_tokens"] == 5 and row["prompt_tokens"] == 3
    assert row["cost_usd"] == pytest.approx((3 * 0.15 + 5 * 0.6) / 1e6)
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]
    # The gateway asked the upstream for usage even though the client did not.
    assert fake_stats(fake_upstream)["last_request"]["body"]["stream_options"] == {"include_usage": True}
    await aclient.close()


def test_stream_with_include_usage_relays_usage(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream))
    chunks = list(
        client(gw.url).chat.completions.create(
            model="cheap",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "a b"}],
        )
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 4


def test_tools_response_format_and_params_pass_through(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream))
    c = client(gw.url)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    out = c.chat.completions.create(
        model="cheap",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0.3,
        stop=["\n\n"],
        n=2,
    )
    call = out.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "fake"}  # type: ignore[union-attr]
    seen = fake_stats(fake_upstream)["last_request"]["body"]
    assert seen["tools"] == tools and seen["tool_choice"]["function"]["name"] == "get_weather"
    assert seen["temperature"] == 0.3 and seen["stop"] == ["\n\n"] and seen["n"] == 2
    assert seen["model"] == "echo"  # the upstream's model name, not the route's

    out = c.chat.completions.create(
        model="cheap", messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"}
    )
    assert json.loads(out.choices[0].message.content or "") == {"fake": True, "echo": "json please"}
    assert fake_stats(fake_upstream)["last_request"]["body"]["response_format"] == {"type": "json_object"}

    # tool calls in a stream
    chunks = list(
        c.chat.completions.create(
            model="cheap",
            stream=True,
            messages=[{"role": "user", "content": "x"}],
            tools=tools,  # type: ignore[arg-type]
        )
    )
    names = [tc.function.name for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert names == ["get_weather"]


def test_500_falls_back_to_second_deployment_then_next_tier(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    policy = f"""
    version: 1
    tiers:
      - name: mid
        deployments:
          - {{name: mid-broken, model: openai/error-500, api_base: "{fake_upstream}/v1", max_retries: 1,
              price: {{input_per_1m: 1, output_per_1m: 1}}}}
          - {{name: mid-ok, model: openai/echo, api_base: "{fake_upstream}/v1",
              price: {{input_per_1m: 1, output_per_1m: 1}}}}
      - name: high
        deployments:
          - {{name: high-broken, model: openai/error-500, api_base: "{fake_upstream}/v1", max_retries: 0,
              price: {{input_per_1m: 5, output_per_1m: 5}}}}
      - name: top
        deployments:
          - {{name: top-ok, model: openai/echo, api_base: "{fake_upstream}/v1",
              price: {{input_per_1m: 9, output_per_1m: 9}}}}
    routes:
      - {{name: m, tier: mid}}
      - {{name: h, tier: high}}
    dispatch: {{backoff_base_s: 0.01, cooldown_s: 0}}
    """
    gw = start_gateway(policy)
    c = client(gw.url)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-tierwise-deployment"] == "mid-ok"
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert row["attempts"] == 3 and json.loads(row["fallbacks"]) == ["mid-broken: http_500", "mid-broken: http_500"]

    raw = c.chat.completions.with_raw_response.create(model="h", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-tierwise-tier"] == "top"
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert row["tier"] == "top" and "tier high -> top" in json.loads(row["fallbacks"])


def test_all_failing_gives_502_envelope_and_is_ledgered(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream, local="error-500", mid="error-500", frontier="error-500"))
    with pytest.raises(openai.InternalServerError) as info:
        client(gw.url).chat.completions.create(model="cheap", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    body = info.value.response.json()
    assert body["error"]["type"] == "upstream_error" and body["error"]["code"] == "upstream_error"
    assert "Traceback" not in info.value.response.text
    row = gw.rows("status_code = 502")[0]
    assert row["attempts"] == 3 and row["cost_usd"] == 0


def test_429_retry_after_is_honoured(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    policy = f"""
    version: 1
    tiers:
      - name: mid
        deployments:
          - {{name: limited, model: openai/rate-limited-429-1, api_base: "{fake_upstream}/v1", max_retries: 1,
              price: {{input_per_1m: 1, output_per_1m: 1}}}}
          - {{name: long-wait, model: openai/rate-limited-429-60, api_base: "{fake_upstream}/v1", max_retries: 3,
              price: {{input_per_1m: 1, output_per_1m: 1}}}}
          - {{name: ok, model: openai/echo, api_base: "{fake_upstream}/v1",
              price: {{input_per_1m: 1, output_per_1m: 1}}}}
    routes: [{{name: m, tier: mid}}]
    dispatch: {{max_retry_after_s: 5, cooldown_s: 0}}
    """
    gw = start_gateway(policy)
    t0 = time.monotonic()
    raw = client(gw.url).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    elapsed = time.monotonic() - t0
    assert raw.headers["x-tierwise-deployment"] == "ok"
    # waited Retry-After: 1 once on `limited`; did not wait 60 s on `long-wait`
    assert 1.0 <= elapsed < 4.0
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert json.loads(row["fallbacks"]) == ["limited: http_429", "limited: http_429", "long-wait: http_429"]


def test_upstream_timeout_is_504(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    policy = f"""
    version: 1
    tiers:
      - name: only
        deployments:
          - {{name: sluggish, model: openai/slow-3000, api_base: "{fake_upstream}/v1", timeout_s: 0.3, max_retries: 0,
              price: {{input_per_1m: 1, output_per_1m: 1}}}}
    routes: [{{name: m, tier: only}}]
    """
    gw = start_gateway(policy)
    r = httpx.post(gw.v1 + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert gw.rows("status_code = 504")[0]["error_type"] == "timeout"


def test_malformed_upstream_answers(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream, local="malformed-stream"))
    # Through the tier, the malformed answer is a failure and the next tier up serves.
    r = httpx.post(gw.v1 + "/chat/completions", json={"model": "cheap", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.headers["x-tierwise-tier"] == "mid"
    # Pinned to the one deployment (no fallback), the client gets a 502 envelope.
    r = httpx.post(
        gw.v1 + "/chat/completions", json={"model": "local-a", "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
    with pytest.raises(openai.APIError):
        for _ in client(gw.url).chat.completions.create(
            model="local-a", stream=True, messages=[{"role": "user", "content": "x"}]
        ):
            pass
    assert gw.rows("error_type = 'malformed_stream'")[0]["status_code"] == 502


def test_client_disconnect_mid_stream_is_still_ledgered(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream, mid="never-ending-stream"))
    body = {"model": "tier/mid", "stream": True, "messages": [{"role": "user", "content": "go on forever"}]}
    with httpx.Client(timeout=10) as http, http.stream("POST", gw.v1 + "/chat/completions", json=body) as r:
        assert r.status_code == 200
        rid = r.headers["x-tierwise-request-id"]
        for seen, _ in enumerate(r.iter_lines()):
            if seen > 40:
                break  # the client walks away mid-stream
    rows = gw.rows("request_id = ?", (rid,), timeout_s=10)
    assert rows, "a disconnected stream must still be ledgered"
    row = rows[0]
    assert row["status_code"] == 499 and row["error_type"] == "client_disconnected"
    assert row["completion_tokens"] > 0 and row["usage_estimated"] == 1
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 0.15 + row["completion_tokens"] * 0.6) / 1e6)


def test_a_client_that_leaves_at_done_still_gets_its_row(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    """SDKs stop reading at [DONE] and hang up while the gateway checks the answer against the
    client's schema (a big one is checked in a process of its own) and settles: every stream
    is still ledgered, answered."""
    gw = start_gateway(three_tier_policy(fake_upstream))
    props = {f"p{i}": {"type": "string", "description": "x" * 40} for i in range(200)}
    schema = {"type": "object", "properties": props}
    body = {
        "model": "tier/mid",
        "stream": True,
        "messages": [{"role": "user", "content": "fill the form"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "form", "schema": schema}},
    }
    ids = []
    for _ in range(5):
        with httpx.Client(timeout=10) as http, http.stream("POST", gw.v1 + "/chat/completions", json=body) as r:
            assert r.status_code == 200
            ids.append(r.headers["x-tierwise-request-id"])
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    break  # and the connection closes
    for rid in ids:
        rows = gw.rows("request_id = ?", (rid,), timeout_s=10)
        assert [r["status_code"] for r in rows] == [200], rid
