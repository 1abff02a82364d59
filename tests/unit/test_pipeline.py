"""The pipeline without HTTP: one ledger row per request whatever happens, budgets always settled."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.availability import Availability
from gateway.chat_request import parse_chat_request
from gateway.dispatch import Dispatcher
from gateway.errors import AuthenticationError, GatewayError, ModelNotFoundError, QuotaExceededError, UpstreamHTTPError
from gateway.keys import Guard, KeyStore, MemoryLimiter
from gateway.ledger import create_schema, make_engine
from gateway.pipeline import Answer, Pipeline, StreamAnswer
from gateway.policy.store import PolicyStore
from gateway.routing.resolve import Resolver
from tests.unit.fakes import THREE_TIERS, FakeClock, RecordingLedger, ScriptedProvider, completion, policy


class World:
    def __init__(self, tmp_path: Path, scripts: dict[str, list[Any]], yaml_text: str = THREE_TIERS) -> None:
        self.clock = FakeClock()
        self.provider = ScriptedProvider(scripts)
        self.ledger = RecordingLedger()
        self.engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
        create_schema(self.engine)
        self.keys = KeyStore(self.engine, clock=self.clock)
        self.limiter = MemoryLimiter()
        guard = Guard(self.keys, self.limiter, None, clock=self.clock)
        dispatcher = Dispatcher({"openai_compatible": self.provider}, {}.get, self.clock, random.Random(0))
        availability = Availability(dispatcher)
        self.pipeline = Pipeline(
            policy=PolicyStore(policy(tmp_path, yaml_text)),
            resolver=Resolver(None, availability.tier_available, availability.deployment_available),
            dispatcher=dispatcher,
            availability=availability,
            guard=guard,
            ledger=self.ledger,
            clock=self.clock,
        )

    async def ask(self, model: str = "m", token: str = "", stream: bool = False, **extra: Any) -> Answer | StreamAnswer:
        body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream, **extra}
        async with self.pipeline.call("chat", token, "127.0.0.1") as call:
            return await self.pipeline.run(call, parse_chat_request(body))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, {"mid-a": [completion("hi", prompt=100, out=50)]})
    yield w
    w.engine.dispose()


async def test_an_answer_is_one_priced_row(world: World) -> None:
    answer = await world.ask()
    assert isinstance(answer, Answer) and answer.headers["x-tierwise-tier"] == "mid"
    (row,) = world.ledger.rows
    assert row.request_id == answer.headers["x-tierwise-request-id"] and row.status_code == 200
    assert row.cost_usd == pytest.approx((100 * 1 + 50 * 2) / 1e6) == answer.cost_usd
    assert row.frontier_cost_usd == pytest.approx((100 * 10 + 50 * 30) / 1e6)
    assert (row.route, row.tier, row.deployment, row.attempts) == ("m", "mid", "mid-a", 1)


async def test_refusals_are_rows_too(world: World) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        await world.ask(model="gpt-17")
    assert info.value.headers["x-tierwise-request-id"]
    world.keys.create(owner="x")  # now keys exist: an anonymous caller is refused
    with pytest.raises(AuthenticationError):
        await world.ask()
    assert [(r.status_code, r.error_type, r.requested_model) for r in world.ledger.rows] == [
        (404, "model_not_found", "gpt-17"),
        (401, "invalid_api_key", ""),
    ]


async def test_budget_is_reserved_then_settled_and_refused_when_short(world: World) -> None:
    key, info = world.keys.create(budget_daily_usd=0.01)
    await world.ask(token=key, max_tokens=100)
    day, _ = await world.limiter.spent(info["id"], world.clock.now())
    assert day == pytest.approx(world.ledger.rows[-1].cost_usd, abs=1e-6)  # the reservation was settled
    with pytest.raises(QuotaExceededError):
        await world.ask(token=key, max_tokens=1000)  # its worst case on mid, frontier does not fit
    assert world.ledger.rows[-1].status_code == 429


async def test_the_worst_case_counts_tools_not_only_messages(world: World) -> None:
    """A large ``tools`` array is billed as prompt: it must be reserved too."""
    key, _ = world.keys.create(budget_daily_usd=0.01)
    schema = {
        "type": "object",
        "properties": {f"field_{i}": {"type": "string", "description": "x" * 200} for i in range(40)},
    }
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    with pytest.raises(QuotaExceededError):
        await world.ask(token=key, tools=tools, max_tokens=1)  # ~9k chars of schema at frontier prices


async def test_an_unexpected_error_is_a_500_row_charged_its_worst_case(tmp_path: Path) -> None:
    """Something broke while an upstream had the request: it may bill all of it, so the key pays
    the worst case (estimated), rather than nothing."""
    w = World(tmp_path, {"mid-a": [RuntimeError("bug")]})
    key, info = w.keys.create(budget_daily_usd=1.0)
    with pytest.raises(RuntimeError):
        await w.ask(token=key, max_tokens=100)
    (row,) = w.ledger.rows
    assert (row.status_code, row.error_type, row.usage_estimated) == (500, "internal_error", True)
    assert row.completion_tokens == 100 and row.cost_usd > 0
    day, _ = await w.limiter.spent(info["id"], w.clock.now())
    assert day == pytest.approx(row.cost_usd, abs=1e-6)
    w.engine.dispose()


async def test_upstream_failure_is_a_502_row_with_the_attempts(tmp_path: Path) -> None:
    w = World(
        tmp_path,
        {
            "mid-a": [UpstreamHTTPError(500, "x")],
            "mid-b": [UpstreamHTTPError(500, "x")],
            "top-a": [UpstreamHTTPError(500, "x")],
        },
    )
    with pytest.raises(GatewayError) as info:
        await w.ask()
    assert info.value.status_code == 502 and "x-tierwise-fallbacks" in info.value.headers
    (row,) = w.ledger.rows
    assert row.status_code == 502 and row.attempts == 4 and row.cost_usd == 0
    w.engine.dispose()


def _chunk(text: str) -> bytes:
    payload = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _drain(answer: Answer | StreamAnswer) -> bytes:
    assert isinstance(answer, StreamAnswer)
    return b"".join([event async for event in answer.relay.events()])


async def test_a_stream_that_ends_without_done_is_an_error_event_and_a_502_row(tmp_path: Path) -> None:
    w = World(tmp_path, {"mid-a": [[_chunk("half an ans")]]})
    out = await _drain(await w.ask(stream=True))
    assert b"upstream_truncated" in out
    (row,) = w.ledger.rows
    assert row.status_code == 502 and row.error_type == "upstream_truncated" and row.usage_estimated
    w.engine.dispose()


async def test_a_complete_stream_is_a_200_row(tmp_path: Path) -> None:
    w = World(tmp_path, {"mid-a": [[_chunk("all"), _chunk(" of it"), b"data: [DONE]\n\n"]]})
    out = await _drain(await w.ask(stream=True))
    assert out.endswith(b"data: [DONE]\n\n")
    (row,) = w.ledger.rows
    assert row.status_code == 200 and row.stream and row.completion_tokens > 0 and row.ttft_ms is not None
    w.engine.dispose()


async def test_a_client_that_leaves_is_a_499_row_once(tmp_path: Path) -> None:
    w = World(tmp_path, {"mid-a": [[_chunk("a"), _chunk("b"), b"data: [DONE]\n\n"]]})
    answer = await w.ask(stream=True)
    assert isinstance(answer, StreamAnswer)
    events = answer.relay.events()
    await events.__anext__()
    await events.aclose()  # the client went away after the first event
    await answer.relay.finish(499, "client_disconnected")  # what the response does too: no second row
    assert [(r.status_code, r.error_type) for r in w.ledger.rows] == [(499, "client_disconnected")]
    w.engine.dispose()


async def test_a_stream_never_started_still_settles(tmp_path: Path) -> None:
    w = World(tmp_path, {"mid-a": [[_chunk("a"), b"data: [DONE]\n\n"]]})
    key, info = w.keys.create(budget_daily_usd=1.0)
    answer = await w.ask(token=key, stream=True)
    assert isinstance(answer, StreamAnswer)
    await answer.relay.finish(499, "client_disconnected")  # the client left before the first byte
    assert [r.status_code for r in w.ledger.rows] == [499]
    day, _ = await w.limiter.spent(info["id"], w.clock.now())
    assert day == pytest.approx(w.ledger.rows[0].cost_usd, abs=1e-6)
    w.engine.dispose()


async def test_a_stream_is_cut_at_max_stream_s(tmp_path: Path) -> None:
    w = World(
        tmp_path,
        {"mid-a": [[_chunk("a")] * 100 + [b"data: [DONE]\n\n"]]},
        THREE_TIERS.replace("failures_before_cooldown: 2", "failures_before_cooldown: 2, max_stream_s: 5"),
    )
    answer = await w.ask(stream=True)
    assert isinstance(answer, StreamAnswer)
    seen = []
    async for event in answer.relay.events():
        seen.append(event)
        w.clock.advance(1)
    assert b"stream_too_long" in seen[-1] and len(seen) < 10
    assert w.ledger.rows[0].status_code == 504
    w.engine.dispose()


async def test_budget_steering_moves_a_key_near_its_limit_to_the_cheapest_tier(tmp_path: Path) -> None:
    w = World(
        tmp_path,
        {"local-a": [completion()], "top-a": [completion()]},
        THREE_TIERS + "limits: {budget_steer_below: 0.5}\n",
    )
    key, info = w.keys.create(budget_daily_usd=1.0)
    await w.limiter.seed(info["id"], 0.6, 0.6, w.clock.now())
    answer = await w.ask(model="tier/frontier", token=key)
    assert isinstance(answer, Answer) and answer.headers["x-tierwise-tier"] == "local"
    assert "steered frontier -> local" in answer.headers["x-tierwise-fallbacks"]
    w.engine.dispose()


async def test_a_stream_left_while_it_settles_is_still_settled() -> None:
    """Clients that stop at [DONE] leave while the relay checks the answer and settles the
    budget; the task relaying the stream is cancelled then, and settlement must run to its end."""
    import asyncio

    from gateway.pipeline.relay import Relay
    from gateway.providers.base import UpstreamStream

    async def nothing() -> Any:
        return
        yield

    started, release, settled = asyncio.Event(), asyncio.Event(), []

    async def finish(stream: UpstreamStream, status: int, error: str | None) -> None:
        started.set()
        await release.wait()  # checking the answer, settling the budget
        settled.append((status, error))

    relay = Relay(UpstreamStream(events=nothing()), finish, FakeClock(), 60.0, lambda: None)
    relaying = asyncio.create_task(relay.finish(200, None))
    await started.wait()
    relaying.cancel()  # the client left
    with pytest.raises(asyncio.CancelledError):
        await relaying
    release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert settled == [(200, None)]
    await relay.finish(499, "client_disconnected")  # what the response does after: nothing more
    assert settled == [(200, None)]
