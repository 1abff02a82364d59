"""POST /v1/messages end to end: the real anthropic SDK against the gateway, routed like chat to
the fake provider's chat API, the ledger read back from the SQLite file."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, fake_stats, three_tier_policy

WEATHER = {
    "name": "get_weather",
    "description": "weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
MASTER = "sk-master-messages-0123456789"


def client(gw: Gateway, key: str = "sk-local") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


@pytest.fixture
def gw(start_gateway: GatewayFactory, fake_upstream: str) -> Gateway:
    return start_gateway(three_tier_policy(fake_upstream))


def test_message_is_routed_and_ledgered(gw: Gateway, fake_upstream: str) -> None:
    raw = client(gw).messages.with_raw_response.create(
        model="cheap",
        max_tokens=64,
        system="answer briefly",
        stop_sequences=["\n\n"],
        messages=[{"role": "user", "content": "hello tierwise"}],
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "[fake echo] hello tierwise"
    assert message.stop_reason == "end_turn" and message.id.startswith("msg_")
    assert raw.headers["x-tierwise-tier"] == "local"
    seen = fake_stats(fake_upstream)["last_request"]["body"]
    assert seen["messages"] == [
        {"role": "system", "content": "answer briefly"},
        {"role": "user", "content": "hello tierwise"},
    ]
    assert seen["max_tokens"] == 64 and seen["stop"] == ["\n\n"]
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert row["api"] == "messages" and row["route"] == "cheap" and row["status_code"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (message.usage.input_tokens, message.usage.output_tokens)


def test_tool_use_round_trip(gw: Gateway, fake_upstream: str) -> None:
    c = client(gw)
    first = c.messages.create(
        model="tier/mid",
        max_tokens=64,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "fake"}
    final = c.messages.create(
        model="tier/mid",
        max_tokens=64,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}]},
        ],
    )
    assert final.content[0].text == "[fake tool result] 18C and sunny"  # type: ignore[union-attr]
    messages = fake_stats(fake_upstream)["last_request"]["body"]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == use.id
    assert messages[2] == {"role": "tool", "tool_call_id": use.id, "content": "18C and sunny"}


def test_one_tool_at_a_time_reaches_the_upstream(gw: Gateway, fake_upstream: str) -> None:
    client(gw).messages.create(
        model="tier/mid",
        max_tokens=64,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "weather in Paris and Rome?"}],
    )
    seen = fake_stats(fake_upstream)["last_request"]["body"]
    assert seen["parallel_tool_calls"] is False and seen["tool_choice"] == "auto"


def test_stream_text_and_tool_use(gw: Gateway) -> None:
    c = client(gw)
    with c.messages.stream(model="cheap", max_tokens=64, messages=[{"role": "user", "content": "one two three"}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(pieces) == "[fake echo] one two three" and len(pieces) == 5
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5
    row = gw.rows("api = 'messages' AND stream = 1")[0]
    assert row["status_code"] == 200 and row["completion_tokens"] == final.usage.output_tokens

    with c.messages.stream(
        model="cheap",
        max_tokens=64,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather?"}],
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "fake"}


def test_broken_stream_raises_in_the_client(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream, local="malformed-stream"))
    with (
        pytest.raises(anthropic.APIStatusError, match="malformed"),
        client(gw).messages.stream(model="local-a", max_tokens=8, messages=[{"role": "user", "content": "x"}]) as s,
    ):
        s.get_final_message()
    assert gw.rows("api = 'messages'")[0]["status_code"] == 502


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"top_k": 3}, "top_k"),
        ({"max_tokens": None}, "max_tokens"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_bad_input_gets_anthropic_error_envelope(gw: Gateway, body: dict[str, object], needle: str) -> None:
    full = {"model": "cheap", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}], **body}
    r = httpx.post(gw.v1 + "/messages", json=full)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"].startswith(needle)
    assert gw.rows("request_id = ?", (r.headers["x-tierwise-request-id"],))[0]["api"] == "messages"


def test_unknown_model_is_not_found(gw: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client(gw).messages.create(model="claude-nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_keys_come_in_x_api_key(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream), master_key=MASTER)
    key = httpx.post(gw.url + "/admin/keys", json={"owner": "coder"}, headers={"authorization": f"Bearer {MASTER}"})
    token = key.json()["key"]
    message = client(gw, token).messages.create(
        model="cheap", max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    assert message.content[0].text == "[fake echo] x"  # type: ignore[union-attr]
    with pytest.raises(anthropic.AuthenticationError) as info:
        client(gw, "tw-wrong").messages.create(model="cheap", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    r = httpx.post(
        gw.v1 + "/messages",
        json={"model": "cheap", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    rows = gw.rows("api = 'messages' AND status_code = 200", wait_for=2)
    assert {r["api_key_id"] for r in rows} == {key.json()["id"]}


def test_a_body_that_is_not_json_gets_anthropics_envelope(gw: Gateway) -> None:
    r = httpx.post(gw.v1 + "/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["type"] == "error" and "not valid JSON" in r.json()["error"]["message"]


def test_every_error_under_messages_is_in_anthropics_envelope(gw: Gateway) -> None:
    """Errors raised before the endpoint (a browser's Origin, an unknown path, a wrong method)
    come from the same renderer as the endpoint's own."""
    for r, status in (
        (httpx.get(gw.v1 + "/messages"), 405),
        (httpx.post(gw.v1 + "/messages/count_tokens", json={}), 404),
        (httpx.post(gw.v1 + "/messages", json={}, headers={"origin": "https://evil.example"}), 403),
    ):
        assert r.status_code == status and r.json()["type"] == "error", r.text
        assert set(r.json()["error"]) == {"type", "message"}
    openai_shaped = httpx.post(gw.v1 + "/chat/completions", json={}, headers={"origin": "https://evil.example"})
    assert openai_shaped.status_code == 403 and set(openai_shaped.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
