"""Per-conversation routing end to end: the real router and openai client against the gateway; a
conversation keeps its first turn's tier, in one process and across two replicas sharing Redis."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.clock import SystemClock
from gateway.routing.redis_sessions import RedisSessions
from gateway.routing.sessions import Kept, MemorySessions, Sessions
from router import Router, default_artifact_dir
from tests.conftest import GatewayFactory, three_tier_policy
from tests.replicas import Replicas

HARD = "Prove that there are infinitely many primes, rigorously, then generalise to primes of the form 4k+3."
# At this cost weight the shipped router sends HARD to the frontier and "Thanks!" to mid.
ROUTED = "router: {artifact: default, cost_weight: 0.05}"
MASTER = "sk-master-sessions-0123456789"


def _policy(fake: str) -> str:
    auto = three_tier_policy(fake, extra=ROUTED)
    return auto.replace("{name: auto, auto: true, tier: mid}", "{name: auto, auto: true}")


def _turns(*said: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": "You are a maths tutor."}]
    for i, text in enumerate(said):
        if i:
            out.append({"role": "assistant", "content": "Here is my answer."})
        out.append({"role": "user", "content": text})
    return out


def test_a_conversation_keeps_its_tier_and_a_fresh_one_routes_alone(
    start_gateway: GatewayFactory, fake_upstream: str
) -> None:
    gw = start_gateway(_policy(fake_upstream), router=Router.load(default_artifact_dir()))
    client = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)
    said = [HARD, "Thanks!", "ok"]
    served = []
    for n in range(1, 4):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=_turns(*said[:n]))
        served.append((raw.headers["x-tierwise-tier"], raw.headers["x-tierwise-router-tier"]))
        session = raw.headers["x-tierwise-session"]
    assert served == [("frontier", "frontier"), ("frontier", "mid"), ("frontier", "mid")]
    rows = gw.rows(wait_for=3)
    assert [r["session_id"] for r in rows] == [session] * 3

    # The same last message opening another conversation: the router decides it alone.
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=_turns("Thanks!"))
    assert raw.headers["x-tierwise-tier"] == "mid" and raw.headers["x-tierwise-session"] != session

    # The Responses API names its conversation the same way.
    first = client.responses.with_raw_response.create(
        model="auto", instructions="Be brief.", input=HARD, extra_headers={"x-tierwise-session": "resp-1"}
    )
    later = client.responses.with_raw_response.create(
        model="auto", input="Thanks!", extra_headers={"x-tierwise-session": "resp-1"}
    )
    assert first.headers["x-tierwise-tier"] == later.headers["x-tierwise-tier"] == "frontier"


def test_a_bad_session_header_is_refused_in_each_apis_envelope(
    start_gateway: GatewayFactory, fake_upstream: str
) -> None:
    gw = start_gateway(_policy(fake_upstream), router=Router.load(default_artifact_dir()))
    bad = {"x-tierwise-session": "no spaces allowed"}
    chat = httpx.post(gw.v1 + "/chat/completions", json={"model": "auto", "messages": _turns("hi")}, headers=bad)
    assert chat.status_code == 400
    assert chat.json()["error"]["param"] == "x-tierwise-session" and chat.json()["error"]["code"] == "invalid_session"
    msg = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    messages = httpx.post(gw.v1 + "/messages", json=msg, headers=bad)
    assert messages.status_code == 400
    assert messages.json()["type"] == "error" and messages.json()["error"]["type"] == "invalid_request_error"


def test_two_replicas_share_a_conversation_through_redis(
    tmp_path: Path, fake_upstream: str, pg_url: str, redis_url: str
) -> None:
    reps = Replicas(tmp_path, _policy(fake_upstream), pg_url, redis_url, MASTER, router=True)
    try:
        a, b = (openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0) for url in reps.urls)
        session = {"x-tierwise-session": f"conv-{uuid.uuid4().hex}"}
        first = a.chat.completions.with_raw_response.create(model="auto", messages=_turns(HARD), extra_headers=session)
        assert first.headers["x-tierwise-tier"] == "frontier"
        second = b.chat.completions.with_raw_response.create(
            model="auto", messages=_turns(HARD, "Thanks!"), extra_headers=session
        )
        assert second.headers["x-tierwise-tier"] == "frontier" and second.headers["x-tierwise-router-tier"] == "mid"
        other = b.chat.completions.with_raw_response.create(
            model="auto",
            messages=_turns(HARD, "Thanks!"),
            extra_headers={"x-tierwise-session": f"conv-{uuid.uuid4().hex}"},
        )
        assert other.headers["x-tierwise-tier"] == "mid"
    finally:
        reps.stop()


@pytest.mark.parametrize("header", [None, "s-1"])
def test_pinned_routes_record_the_session_without_keeping_a_tier(
    start_gateway: GatewayFactory, fake_upstream: str, header: str | None
) -> None:
    gw = start_gateway(_policy(fake_upstream), router=Router.load(default_artifact_dir()))
    extra = {"x-tierwise-session": header} if header else {}
    raw = openai.OpenAI(base_url=gw.v1, api_key="x").chat.completions.with_raw_response.create(
        model="cheap", messages=_turns(HARD), extra_headers=extra
    )
    assert raw.headers["x-tierwise-tier"] == "local"
    assert raw.headers.get("x-tierwise-session") == header
    assert gw.rows()[0]["session_id"] == header


async def test_redis_keeps_leaves_and_reports_a_conversations_tier_as_memory_does(redis_url: str) -> None:
    """The Lua script and ``kept_tier`` are one rule written twice: the same table on both stores;
    what each tier's cache holds expires on both."""
    order = ["local", "mid", "frontier"]
    stores: list[Sessions] = [RedisSessions(redis_url, prefix=f"t-{uuid.uuid4().hex}"), MemorySessions(SystemClock())]
    for store in stores:
        assert await store.keep("k", "c", "frontier", order, 60) == Kept("frontier", None)
        assert await store.keep("k", "c", "mid", order, 60) == Kept("frontier", "frontier")
        assert await store.keep("k", "c", "mid", order, 60, leave=["local"]) == Kept("frontier", "frontier")
        assert await store.keep("k", "c", "mid", order, 60, leave=["frontier"]) == Kept("mid", "frontier")
        assert await store.keep("k", "c", "frontier", order, 60) == Kept("frontier", "mid")
        assert await store.keep("k", "c", "local", order, 60, fresh=True) == Kept("local", None)
        assert await store.keep("other", "c", "mid", order, 60) == Kept("mid", None)
        await store.warmed("k", "c", "mid", 5_000, 60)
        await store.warmed("k", "c", "frontier", 9_000, 0.001)  # gone by the time it is read
        await asyncio.sleep(0.01)
        assert await store.warmth("k", "c", order) == {"mid": 5_000}
        assert await store.warmth("other", "c", order) == {}
        await store.aclose()
