"""POST /v1/responses end to end: the real openai SDK's ``responses`` client against the gateway,
the fake provider as upstream over real HTTP, the ledger read back from the SQLite file."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Gateway, GatewayFactory, fake_stats, three_tier_policy

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="sk-local", max_retries=0)


@pytest.fixture
def gw(start_gateway: GatewayFactory, fake_upstream: str) -> Gateway:
    return start_gateway(three_tier_policy(fake_upstream))


def test_text_answer_is_routed_and_ledgered(gw: Gateway, fake_upstream: str) -> None:
    raw = client(gw).responses.with_raw_response.create(
        model="cheap", input="hello tierwise", instructions="answer briefly", max_output_tokens=50, temperature=0.2
    )
    response = raw.parse()
    assert response.output_text == "[fake echo] hello tierwise"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert raw.headers["x-tierwise-tier"] == "local" and raw.headers["x-tierwise-deployment"] == "local-a"
    seen = fake_stats(fake_upstream)["last_request"]["body"]
    assert seen["messages"] == [
        {"role": "system", "content": "answer briefly"},
        {"role": "user", "content": "hello tierwise"},
    ]
    assert seen["max_completion_tokens"] == 50 and seen["temperature"] == 0.2

    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert row["api"] == "responses" and row["route"] == "cheap" and row["status_code"] == 200
    assert response.usage is not None
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        response.usage.input_tokens,
        response.usage.output_tokens,
    )


def test_function_tool_round_trip(gw: Gateway, fake_upstream: str) -> None:
    c = client(gw)
    first = c.responses.create(model="tier/mid", input="weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "fake"}

    # The tool's result goes back as an input item, with the call it answers; the model answers.
    final = c.responses.create(
        model="tier/mid",
        tools=[WEATHER],  # type: ignore[list-item]
        input=[
            {"role": "user", "content": "weather in Paris?"},
            call.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ],
    )
    assert final.output_text == "[fake tool result] 18C and sunny"
    messages = fake_stats(fake_upstream)["last_request"]["body"]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C and sunny"}


class Echo(BaseModel):
    fake: bool
    echo: str


def test_json_schema_output(gw: Gateway, fake_upstream: str) -> None:
    parsed = client(gw).responses.parse(model="cheap", input="json please", text_format=Echo)
    assert parsed.output_parsed == Echo(fake=True, echo="json please")
    sent = fake_stats(fake_upstream)["last_request"]["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Echo"
    assert sent["json_schema"]["schema"]["required"] == ["fake", "echo"]


def test_stream_has_the_documented_event_sequence(gw: Gateway) -> None:
    with client(gw).responses.stream(model="cheap", input="one two three") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "[fake echo] one two three" and len(deltas) == 5
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "[fake echo] one two three" and final.usage is not None
    row = gw.rows("api = 'responses' AND stream = 1")[0]
    assert row["status_code"] == 200 and row["completion_tokens"] == final.usage.output_tokens
    assert row["ttft_ms"] is not None


def test_stream_function_call_events(gw: Gateway) -> None:
    with client(gw).responses.stream(model="cheap", input="weather?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "fake"}


def test_a_broken_stream_ends_with_an_error_event(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream, local="malformed-stream"))
    with client(gw).responses.stream(model="local-a", input="x") as stream:
        events = list(stream)
        with pytest.raises(RuntimeError):
            stream.get_final_response()  # no response.completed ever came
    assert events[-1].type == "error" and events[-1].code == "malformed_stream"  # type: ignore[union-attr]
    assert gw.rows("api = 'responses'")[0]["status_code"] == 502


def test_client_leaving_a_stream_is_ledgered(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream, mid="never-ending-stream"))
    body = {"model": "tier/mid", "stream": True, "input": "go on forever"}
    with httpx.Client(timeout=10) as http, http.stream("POST", gw.v1 + "/responses", json=body) as r:
        rid = r.headers["x-tierwise-request-id"]
        for seen, _ in enumerate(r.iter_lines()):
            if seen > 40:
                break
    row = gw.rows("request_id = ?", (rid,), timeout_s=10)[0]
    assert row["status_code"] == 499 and row["api"] == "responses" and row["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"store": True}, "store", "unsupported_parameter"),
        ({"previous_response_id": "resp_1"}, "previous_response_id", "unsupported_parameter"),
        ({"fallbacks": ["gpt-4o"]}, "fallbacks", "unsupported_parameter"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
        ({"input": [{"type": "file_search_call", "id": "x"}]}, "input[0].type", "unsupported_parameter"),
        ({"input": [{"role": "user", "content": 7}]}, "input[0].content", None),
        ({"input": None}, "input", None),
        ({"temperature": "hot"}, "temperature", None),
        ({"max_output_tokens": 0}, "max_output_tokens", None),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format.name", None),
    ],
)
def test_bad_input_gets_openai_error_envelope(gw: Gateway, body: dict[str, object], param: str, code: str) -> None:
    r = httpx.post(gw.v1 + "/responses", json={"model": "cheap", "input": "x", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code
    assert re.split(r"[\[.]", param, maxsplit=1)[0] in error["message"]
    row = gw.rows("request_id = ?", (r.headers["x-tierwise-request-id"],))[0]
    assert row["api"] == "responses" and row["status_code"] == 400
