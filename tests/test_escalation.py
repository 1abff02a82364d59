"""Escalation end to end: the real openai client, a real gateway, the fake tiers over HTTP and the
bundled SmolLM2 as the local tier. An answer that visibly fails its checks is replaced by the next
tier's before the client sees it; both answers are paid and ledgered in one row."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import GatewayFactory, three_tier_policy

JSON = {"type": "json_object"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


def _client(gw_v1: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw_v1, api_key="x", max_retries=0, timeout=120)


@pytest.mark.local_model
def test_the_local_model_running_out_of_tokens_mid_json_is_answered_by_the_tier_above(
    start_gateway: GatewayFactory, smollm2: str, fake_upstream: str
) -> None:
    """SmolLM2 with the policy's 8-token limit cuts its JSON short; the client gets mid's valid JSON."""
    policy = f"""
    version: 1
    tiers:
      - name: local
        deployments:
          - {{name: local-smollm2, model: openai/smollm2-135m-instruct, api_base: "{smollm2}", timeout_s: 120,
              max_output_tokens: 8, price: {{input_per_1m: 0, output_per_1m: 0}}}}
      - name: mid
        deployments:
          - {{name: mid-a, model: openai/echo, api_base: "{fake_upstream}/v1", max_retries: 0,
              price: {{input_per_1m: 0.15, output_per_1m: 0.6}}}}
    routes: [{{name: cheap, tier: local}}]
    escalate: {{on: [invalid_json, truncated], stream: buffer}}
    """
    gw = start_gateway(policy)
    ask = [{"role": "user", "content": "Give the capital of France as JSON with keys city and country."}]
    raw = _client(gw.v1).chat.completions.with_raw_response.create(
        model="cheap", messages=ask, response_format=JSON, temperature=0
    )
    assert raw.headers["x-tierwise-escalated"] == "local->mid (invalid_json,truncated)"
    assert raw.headers["x-tierwise-tier"] == "mid"
    assert json.loads(raw.parse().choices[0].message.content or "")["fake"] is True
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    steps = json.loads(row["steps"])
    assert [s["tier"] for s in steps] == ["local", "mid"]
    assert steps[0]["completion_tokens"] == 8 and steps[0]["reasons"] == ["invalid_json", "truncated"]
    assert row["completion_tokens"] == sum(s["completion_tokens"] for s in steps)
    assert row["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in steps)) and row["cost_usd"] > 0

    # Streamed and buffered: the truncated local opening never reaches the client.
    pieces = [
        ch.choices[0].delta.content or ""
        for ch in _client(gw.v1).chat.completions.create(
            model="cheap", messages=ask, response_format=JSON, temperature=0, stream=True
        )
        if ch.choices
    ]
    assert json.loads("".join(pieces))["fake"] is True
    row = gw.rows("stream = 1")[0]
    assert row["tier"] == "mid" and row["status_code"] == 200 and len(json.loads(row["steps"])) == 2


@pytest.mark.parametrize(
    ("max_steps", "tier", "header"),
    [
        (1, "mid", "local->mid (invalid_json)"),
        (2, "frontier", "local->mid (invalid_json); mid->frontier (invalid_json)"),
    ],
)
def test_a_format_ignored_goes_up_until_max_steps(
    start_gateway: GatewayFactory, fake_upstream: str, max_steps: int, tier: str, header: str
) -> None:
    escalate = f"escalate: {{on: [invalid_json], max_steps: {max_steps}}}"
    gw = start_gateway(three_tier_policy(fake_upstream, local="ignores-format", mid="ignores-format", extra=escalate))
    raw = _client(gw.v1).chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "user", "content": "a user as JSON"}], response_format=JSON
    )
    assert raw.headers["x-tierwise-escalated"] == header and raw.headers["x-tierwise-tier"] == tier
    content = raw.parse().choices[0].message.content or ""
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert [s["tier"] for s in json.loads(row["steps"])] == ["local", "mid", "frontier"][: max_steps + 1]
    if max_steps == 1:  # mid fails too, but its answer is the one the client gets, and the failure is recorded
        assert content.startswith("Sure!") and json.loads(row["checks"]) == ["invalid_json"]
    else:
        assert json.loads(content)["fake"] is True and row["checks"] is None


def test_tool_arguments_of_the_wrong_type_go_up(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(
        three_tier_policy(fake_upstream, local="bad-tool-args", extra="escalate: {on: [tool_args_invalid]}")
    )
    raw = _client(gw.v1).chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "user", "content": "weather in Paris for 3 days"}], tools=[WEATHER]
    )
    call = (raw.parse().choices[0].message.tool_calls or [])[0]
    assert raw.headers["x-tierwise-escalated"] == "local->mid (tool_args_invalid)"
    assert isinstance(json.loads(call.function.arguments)["days"], int)  # type: ignore[union-attr]


def test_without_escalation_the_failure_is_only_recorded(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream, local="ignores-format"))
    raw = _client(gw.v1).chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "user", "content": "a user as JSON"}], response_format=JSON
    )
    assert "x-tierwise-escalated" not in raw.headers and raw.headers["x-tierwise-tier"] == "local"
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert json.loads(row["checks"]) == ["invalid_json"] and row["steps"] is None


def test_a_route_can_turn_escalation_off(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    policy = three_tier_policy(fake_upstream, local="ignores-format", extra="escalate: {on: [invalid_json]}")
    policy = policy.replace("{name: cheap, tier: local}", "{name: cheap, tier: local, escalate: {on: []}}")
    gw = start_gateway(policy)
    raw = _client(gw.v1).chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "user", "content": "a user as JSON"}], response_format=JSON
    )
    assert "x-tierwise-escalated" not in raw.headers and raw.headers["x-tierwise-tier"] == "local"


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_escalation_and_fallback_stay_inside_a_keys_fence(
    start_gateway: GatewayFactory, fake_upstream: str, api: str
) -> None:
    """A key limited to the `cheap` route got the frontier's answer through escalation."""
    import httpx

    escalate = "escalate: {on: [invalid_json], max_steps: 2}"
    policy = three_tier_policy(fake_upstream, local="ignores-format", mid="ignores-format", extra=escalate)
    gw = start_gateway(policy, master_key="sk-master-fence-0123456789")
    admin = {"authorization": "Bearer sk-master-fence-0123456789"}
    made = httpx.post(gw.url + "/admin/keys", json={"allowed_routes": ["cheap"]}, headers=admin)
    assert made.status_code == 201, made.text
    client = _client(gw.v1).with_options(api_key=made.json()["key"])
    if api == "chat":
        raw: object = client.chat.completions.with_raw_response.create(
            model="cheap", messages=[{"role": "user", "content": "a user as JSON"}], response_format=JSON
        )
    else:
        raw = client.responses.with_raw_response.create(
            model="cheap", input="a user as JSON", text={"format": {"type": "json_object"}}
        )
    headers = raw.headers  # type: ignore[attr-defined]
    assert headers["x-tierwise-tier"] == "local" and "x-tierwise-escalated" not in headers
    row = gw.rows("request_id = ?", (headers["x-tierwise-request-id"],))[0]
    assert row["tier"] == "local" and json.loads(row["checks"]) == ["invalid_json"]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="tier/frontier", messages=[{"role": "user", "content": "hi"}])
