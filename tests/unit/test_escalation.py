"""Escalation in the pipeline: a cheaper answer that fails its checks is replaced by the next tier's,
every answer is paid for and ledgered in one row, and the client sees only the one it gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.errors import QuotaExceededError, UpstreamHTTPError
from gateway.pipeline import Answer, StreamAnswer
from gateway.providers.base import Completion
from gateway.usage import Usage
from tests.unit.fakes import THREE_TIERS
from tests.unit.test_pipeline import World

JSON = {"response_format": {"type": "json_object"}}


def policy(escalate: str, route_tier: str = "local") -> str:
    return THREE_TIERS.replace("  - {name: cheap, tier: local}", f"  - {{name: cheap, tier: {route_tier}}}") + (
        f"escalate: {escalate}\n"
    )


def answer(
    text: str, finish: str = "stop", prompt: int = 10, out: int = 5, logprobs: list[float] | None = None
) -> Completion:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": v, "top_logprobs": []} for v in logprobs]}
    payload = {"choices": [choice]}
    return Completion(orjson.dumps(payload), Usage(prompt, out), payload)


def chunk(text: str, finish: str | None = None) -> bytes:
    payload = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def test_invalid_json_goes_one_tier_up_and_both_answers_are_paid(tmp_path: Path) -> None:
    w = World(
        tmp_path,
        {"local-a": [answer("Sure! {a: 1}")], "mid-a": [answer('{"a": 1}', prompt=10, out=5)]},
        policy("{on: [invalid_json]}"),
    )
    out = await w.ask(model="cheap", **JSON)
    assert isinstance(out, Answer)
    assert json.loads(out.body)["choices"][0]["message"]["content"] == '{"a": 1}'
    assert (
        out.headers["x-tierwise-escalated"] == "local->mid (invalid_json)" and out.headers["x-tierwise-tier"] == "mid"
    )
    (row,) = w.ledger.rows
    steps = json.loads(row.steps)
    assert [(s["tier"], s["reasons"]) for s in steps] == [("local", ["invalid_json"]), ("mid", [])]
    assert row.tier == "mid" and row.checks is None
    assert row.prompt_tokens == 20 and row.cost_usd == pytest.approx(sum(s["cost_usd"] for s in steps))
    w.engine.dispose()


async def test_max_steps_holds_and_the_last_answer_is_returned(tmp_path: Path) -> None:
    scripts = {"local-a": [answer("no json")], "mid-a": [answer("still no json")], "top-a": [answer("{}")]}
    w = World(tmp_path, scripts, policy("{on: [invalid_json], max_steps: 1}"))
    out = await w.ask(model="cheap", **JSON)
    assert isinstance(out, Answer) and json.loads(out.body)["choices"][0]["message"]["content"] == "still no json"
    assert [n for n, _ in w.provider.calls] == ["local-a", "mid-a"]
    assert json.loads(w.ledger.rows[0].checks) == ["invalid_json"]  # the delivered answer still fails
    w.engine.dispose()
    w = World(tmp_path / "2", scripts, policy("{on: [invalid_json], max_steps: 2}"))
    out = await w.ask(model="cheap", **JSON)
    assert isinstance(out, Answer) and out.headers["x-tierwise-tier"] == "frontier"
    assert out.headers["x-tierwise-escalated"] == "local->mid (invalid_json); mid->frontier (invalid_json)"
    w.engine.dispose()


async def test_truncation_escalates_only_when_the_gateway_chose_the_limit(tmp_path: Path) -> None:
    scripts = {"local-a": [answer("It was the", "length")], "mid-a": [answer("It was the best of times.")]}
    w = World(tmp_path, scripts, policy("{on: [truncated]}"))
    assert (await w.ask(model="cheap")).headers["x-tierwise-tier"] == "mid"  # type: ignore[union-attr]
    assert (await w.ask(model="cheap", max_tokens=3)).headers["x-tierwise-tier"] == "local"  # type: ignore[union-attr]
    w.engine.dispose()


async def test_a_failing_tier_above_leaves_the_paid_answer(tmp_path: Path) -> None:
    scripts = {
        "local-a": [answer("no json")],
        "mid-a": [UpstreamHTTPError(500, "x")],
        "mid-b": [UpstreamHTTPError(500, "x")],
        "top-a": [UpstreamHTTPError(500, "x")],
    }
    w = World(tmp_path, scripts, policy("{on: [invalid_json]}"))
    out = await w.ask(model="cheap", **JSON)
    assert isinstance(out, Answer) and out.headers["x-tierwise-tier"] == "local"
    assert "x-tierwise-escalated" not in out.headers and "mid-a: http_500" in out.headers["x-tierwise-fallbacks"]
    (row,) = w.ledger.rows
    assert row.status_code == 200 and row.steps is None and row.tier == "local"
    w.engine.dispose()


async def test_budgets_reserve_for_every_answer_an_escalation_may_pay(tmp_path: Path) -> None:
    scripts = {"local-a": [answer("{}")], "mid-a": [answer("{}")]}
    # One worst case (mid, with frontier as fallback: 100 output tokens at $30 per 1M, plus the prompt)
    # fits $0.005; two do not.
    w = World(tmp_path, scripts, policy("{on: [invalid_json], max_steps: 1}", route_tier="mid"))
    key, _ = w.keys.create(budget_daily_usd=0.005)
    with pytest.raises(QuotaExceededError):
        await w.ask(model="cheap", token=key, max_tokens=100, **JSON)
    w.engine.dispose()
    w = World(tmp_path / "2", scripts, THREE_TIERS.replace("{name: cheap, tier: local}", "{name: cheap, tier: mid}"))
    key, _ = w.keys.create(budget_daily_usd=0.005)
    assert isinstance(await w.ask(model="cheap", token=key, max_tokens=100, **JSON), Answer)
    w.engine.dispose()


async def test_a_pinned_deployment_is_never_escalated(tmp_path: Path) -> None:
    w = World(tmp_path, {"local-a": [answer("no json")]}, policy("{on: [invalid_json]}"))
    out = await w.ask(model="local-a", **JSON)
    assert isinstance(out, Answer) and out.headers["x-tierwise-tier"] == "local"
    w.engine.dispose()


async def test_low_confidence_asks_for_logprobs_and_hides_them(tmp_path: Path) -> None:
    scripts = {
        "local-a": [answer("Paris", logprobs=[-0.1, -6.0, -5.0, -4.5])],
        "mid-a": [answer("Paris", logprobs=[-0.1])],
    }
    w = World(tmp_path, scripts, policy("{on: [low_confidence], min_confidence: -2.0}"))
    out = await w.ask(model="cheap")
    assert isinstance(out, Answer) and out.headers["x-tierwise-escalated"] == "local->mid (low_confidence)"
    sent = w.provider.calls[0][1]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 0
    assert "logprobs" not in json.loads(out.body)["choices"][0]  # the client did not ask for them
    w.engine.dispose()


async def _drain(answer: Answer | StreamAnswer) -> bytes:
    assert isinstance(answer, StreamAnswer)
    return b"".join([e async for e in answer.relay.events()])


async def test_a_buffered_stream_escalates_before_the_client_sees_anything(tmp_path: Path) -> None:
    scripts = {
        "local-a": [[chunk("not "), chunk("json", "stop"), DONE]],
        "mid-a": [[chunk('{"a"'), chunk(": 1}", "stop"), DONE]],
    }
    w = World(tmp_path, scripts, policy("{on: [invalid_json], stream: buffer}"))
    answer_ = await w.ask(model="cheap", stream=True, **JSON)
    assert isinstance(answer_, StreamAnswer) and answer_.headers["x-tierwise-escalated"] == "local->mid (invalid_json)"
    out = await _drain(answer_)
    assert b"not " not in out and b'{\\"a\\"' in out and out.endswith(DONE)
    (row,) = w.ledger.rows
    assert row.tier == "mid" and len(json.loads(row.steps)) == 2 and row.status_code == 200
    w.engine.dispose()


async def test_without_buffering_a_stream_is_checked_afterwards_only(tmp_path: Path) -> None:
    scripts = {"local-a": [[chunk("not "), chunk("json", "stop"), DONE]]}
    w = World(tmp_path, scripts, policy("{on: [invalid_json]}"))
    out = await _drain(await w.ask(model="cheap", stream=True, **JSON))
    assert b"not " in out
    (row,) = w.ledger.rows
    assert row.tier == "local" and json.loads(row.checks) == ["invalid_json"] and row.steps is None
    w.engine.dispose()


async def test_a_buffered_opening_is_replayed_with_the_rest(tmp_path: Path) -> None:
    """Refusal only shows in an answer's opening: only that much is held, then relayed in order."""
    words = [chunk(f"word{i} ") for i in range(40)]
    w = World(
        tmp_path,
        {"local-a": [[*words, chunk("", "stop"), DONE]]},
        policy("{on: [refusal], stream: buffer, buffer_tokens: 8}"),
    )
    out = await _drain(await w.ask(model="cheap", stream=True))
    assert out == b"".join([*words, chunk("", "stop"), DONE])
    w.engine.dispose()
    refusal = [chunk("I'm sorry, but I can't help with that."), chunk(" Really.", "stop"), DONE]
    w = World(
        tmp_path / "2",
        {"local-a": [refusal], "mid-a": [[chunk("Here you go.", "stop"), DONE]]},
        policy("{on: [refusal], stream: buffer, buffer_tokens: 4}"),
    )
    out = await _drain(await w.ask(model="cheap", stream=True))
    assert b"sorry" not in out and b"Here you go." in out
    w.engine.dispose()
