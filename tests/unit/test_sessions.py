"""Per-conversation routing: a conversation keeps its first turn's tier and only moves up."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.chat_request import parse_chat_request
from gateway.errors import InvalidRequestError
from gateway.pipeline import Answer
from gateway.policy.models import Price
from gateway.routing.moves import growth_per_turn, prompt_tokens, shared_prefix, turn_cost, worth_leaving
from gateway.routing.resolve import Resolver
from gateway.routing.sessions import Kept, MemorySessions, Sessions, conversation_id, valid_session
from tests.unit.fakes import THREE_TIERS, FakeClock, completion
from tests.unit.test_pipeline import World

ORDER = ["local", "mid", "frontier"]
AUTO = THREE_TIERS.replace("routes:\n", "router: {artifact: default}\nroutes:\n  - {name: auto, auto: true}\n")


@dataclass
class Decision:
    tier: str
    scores: dict[str, float] = field(default_factory=dict)
    version: str = "keywords"


class KeywordRouter:
    """Routes on a word in the last user turn: "hard" -> frontier, "medium" -> mid, else local."""

    version = "keywords"
    tiers: Sequence[str] = ORDER
    encoder_name = "none"

    def decide(self, text: str, **_: Any) -> Decision:
        return Decision("frontier" if "hard" in text else "mid" if "medium" in text else "local")

    def cost_scale(self, relative_call_cost: Mapping[str, float | None]) -> list[float]:
        return [1.0] * len(ORDER)

    def decides_inline(self, text: str, length: int | None = None) -> bool:
        return True

    def features(self, texts: Sequence[str], *, lengths: Sequence[int | None] | None = None) -> Any:
        return None


def world(tmp_path: Path, sessions: Sessions | None, yaml_text: str = AUTO) -> World:
    w = World(tmp_path, {name: [completion("ok")] for name in ("local-a", "mid-a", "top-a")}, yaml_text)
    w.pipeline.resolver = Resolver(KeywordRouter(), lambda _p, _t: True, sessions=sessions)
    return w


async def turn(w: World, messages: list[dict[str, Any]], session: str | None = None, token: str = "") -> Answer:
    async with w.pipeline.call("chat", token, "127.0.0.1", session) as call:
        answer = await w.pipeline.run(call, parse_chat_request({"model": "auto", "messages": messages}))
    assert isinstance(answer, Answer)
    return answer


def conversation(*turns: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": "You help with code."}]
    for i, text in enumerate(turns):
        if i:
            out.append({"role": "assistant", "content": "..."})
        out.append({"role": "user", "content": text})
    return out


async def test_later_turns_keep_the_tier_and_only_move_up(tmp_path: Path) -> None:
    w = world(tmp_path, MemorySessions(FakeClock()))
    tiers = []
    said = ["a medium question", "thanks", "now a hard one", "ok, bye"]
    for n in range(1, len(said) + 1):
        answer = await turn(w, conversation(*said[:n]))
        tiers.append(answer.headers["x-tierwise-tier"])
        assert answer.headers["x-tierwise-session"].startswith("h-")
    assert tiers == ["mid", "mid", "frontier", "frontier"]
    rows = w.ledger.rows
    assert [r.router_tier for r in rows] == ["mid", "local", "frontier", "local"]  # what the router said
    assert len({r.session_id for r in rows}) == 1
    # the same last message in a fresh conversation is routed on its own
    fresh = await turn(w, [{"role": "user", "content": "thanks"}])
    assert fresh.headers["x-tierwise-tier"] == "local"
    w.engine.dispose()


async def test_a_named_session_ignores_the_opening_and_is_per_key(tmp_path: Path) -> None:
    w = world(tmp_path, MemorySessions(FakeClock()))
    (key_a, _), (key_b, _) = w.keys.create(owner="a"), w.keys.create(owner="b")
    first = await turn(w, conversation("a hard question"), session="chat-42", token=key_a)
    assert first.headers["x-tierwise-tier"] == "frontier" and first.headers["x-tierwise-session"] == "chat-42"
    other_opening = await turn(w, conversation("hello"), session="chat-42", token=key_a)
    assert other_opening.headers["x-tierwise-tier"] == "frontier"
    # another key's conversation of the same name is its own
    theirs = await turn(w, conversation("hello"), session="chat-42", token=key_b)
    assert theirs.headers["x-tierwise-tier"] == "local"
    assert [r.session_id for r in w.ledger.rows] == ["chat-42"] * 3
    w.engine.dispose()


async def test_a_session_expires_after_its_ttl(tmp_path: Path) -> None:
    clock = FakeClock()
    w = world(tmp_path, MemorySessions(clock), AUTO + "sessions: {ttl_s: 60}\n")
    await turn(w, conversation("a hard question"), session="s1")
    clock.advance(59)
    assert (await turn(w, conversation("hi"), session="s1")).headers["x-tierwise-tier"] == "frontier"
    clock.advance(59)  # renewed by the last turn
    assert (await turn(w, conversation("hi"), session="s1")).headers["x-tierwise-tier"] == "frontier"
    clock.advance(61)
    assert (await turn(w, conversation("hi"), session="s1")).headers["x-tierwise-tier"] == "local"
    w.engine.dispose()


async def test_sessions_off_routes_every_turn_alone(tmp_path: Path) -> None:
    w = world(tmp_path, MemorySessions(FakeClock()), AUTO + "sessions: {enabled: false}\n")
    await turn(w, conversation("a hard question"), session="s1")
    answer = await turn(w, conversation("hi"), session="s1")
    assert answer.headers["x-tierwise-tier"] == "local"
    assert w.ledger.rows[-1].session_id == "s1"  # still recorded: the dashboard can follow it
    w.engine.dispose()


async def test_a_bad_session_name_is_a_400(tmp_path: Path) -> None:
    w = world(tmp_path, MemorySessions(FakeClock()))
    with pytest.raises(InvalidRequestError) as err:
        await turn(w, conversation("hi"), session="x" * 200)
    assert err.value.param == "x-tierwise-session"
    assert w.ledger.rows[-1].status_code == 400
    w.engine.dispose()


async def test_a_failing_store_routes_the_turn_alone(tmp_path: Path) -> None:
    class Down(Sessions):
        async def keep(self, *args: Any, **kwargs: Any) -> Kept:
            raise ConnectionError("redis is down")

        async def warmth(self, *args: Any, **kwargs: Any) -> dict[str, int]:
            raise ConnectionError("redis is down")

        async def warmed(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("redis is down")

    w = world(tmp_path, Down())
    assert (await turn(w, conversation("a medium question"))).headers["x-tierwise-tier"] == "mid"
    w.engine.dispose()
    w = world(tmp_path / "cheaper", Down(), CACHED + "sessions: {move_down: when_cheaper}\n")
    assert (await turn(w, conversation("a hard one", "a medium question"))).headers["x-tierwise-tier"] == "mid"
    w.engine.dispose()


async def test_escalation_moves_the_conversation_up(tmp_path: Path) -> None:
    escalate = AUTO + "escalate: {on: [invalid_json]}\n"
    w = world(tmp_path, MemorySessions(FakeClock()), escalate)
    w.provider.scripts["local-a"] = [completion("not json")]
    w.provider.scripts["mid-a"] = [completion('{"a": 1}')]
    messages = conversation("hi")
    async with w.pipeline.call("chat", "", "127.0.0.1") as call:
        chat = parse_chat_request({"model": "auto", "messages": messages, "response_format": {"type": "json_object"}})
        first = await w.pipeline.run(call, chat)
    assert isinstance(first, Answer) and first.headers["x-tierwise-tier"] == "mid"
    second = await turn(w, [*messages, {"role": "assistant", "content": "{}"}, {"role": "user", "content": "more"}])
    assert second.headers["x-tierwise-tier"] == "mid"
    assert json.loads(w.ledger.rows[0].steps or "[]")[0]["tier"] == "local"
    w.engine.dispose()


# Claude Haiku 4.5 and Sonnet 4.5 list prices (USD per 1M tokens): cache reads are 10% of input.
HAIKU = Price(input_per_1m=1, output_per_1m=5, cached_input_per_1m=0.1)
SONNET = Price(input_per_1m=3, output_per_1m=15, cached_input_per_1m=0.3)
CACHED = AUTO.replace(
    "price: {input_per_1m: 1, output_per_1m: 2}", "price: {input_per_1m: 1, output_per_1m: 5, cached_input_per_1m: 0.1}"
).replace(
    "price: {input_per_1m: 10, output_per_1m: 30}",
    "price: {input_per_1m: 3, output_per_1m: 15, cached_input_per_1m: 0.3}",
)


def test_a_move_down_must_pay_for_the_cache_it_leaves() -> None:
    prices, order = {"mid": HAIKU, "frontier": SONNET}, ["mid", "frontier"]
    # 50k tokens of agent history, all but the last 500 in Sonnet's cache: 0.0201 there,
    # 0.0513 on a cold Haiku
    assert worth_leaving(prices, order, "mid", 50_000, {"frontier": 49_500}) == []
    # Haiku served the first 40k (an earlier turn) and still holds them: 0.0153 there
    assert worth_leaving(prices, order, "mid", 50_000, {"frontier": 49_500, "mid": 40_000}) == ["frontier"]
    # the kept tier's cache expired: cheaper is cheaper
    assert worth_leaving(prices, order, "mid", 50_000, {}) == ["frontier"]
    # 5k tokens: a cold Haiku (0.0063) beats a warm Sonnet (0.0066), unless writes cost 1.25x (0.0075)
    assert worth_leaving(prices, order, "mid", 5_000, {"frontier": 4_500}) == ["frontier"]
    writes = {"mid": HAIKU.model_copy(update={"cache_write_per_1m": 1.25}), "frontier": SONNET}
    assert worth_leaving(writes, order, "mid", 5_000, {"frontier": 4_500}) == []
    # under the providers' 1,024-token minimum nothing is cached
    assert turn_cost(SONNET, 1_000, 900) == turn_cost(SONNET, 1_000, 0)
    # a Sonnet without a cache-read price caches nothing we can count on
    uncached = {"mid": HAIKU, "frontier": Price(input_per_1m=3, output_per_1m=15)}
    assert worth_leaving(uncached, order, "mid", 50_000, {"frontier": 49_500}) == ["frontier"]
    assert worth_leaving(prices, order, "frontier", 50_000, {}) == []  # nothing above
    # over four turns of 500 new tokens each the cold write pays for itself: 0.0714 against 0.0804
    assert worth_leaving(prices, order, "mid", 50_000, {"frontier": 49_500}, horizon=4, growth=500) == ["frontier"]
    assert worth_leaving(prices, order, "mid", 50_000, {"frontier": 49_500}, horizon=2, growth=500) == []
    assert 1100 < prompt_tokens([{"role": "user", "content": "x" * 4400}]) < 1120
    system = [{"role": "system", "content": "s" * 8000}, {"role": "developer", "content": "d"}]
    named = shared_prefix([*system, {"role": "user", "content": "a"}])
    assert named is not None and named == shared_prefix([*system, {"role": "user", "content": "b"}])
    assert named[0].startswith("~prefix:") and not valid_session(named[0]) and 2000 < named[1] < 2100
    assert shared_prefix([{"role": "user", "content": "a"}]) is None
    # growth per turn leaves the opening out: a pasted document is not what each turn adds
    opened = [*system, {"role": "user", "content": "doc " * 20_000}]
    turns = [{"role": "assistant", "content": "a" * 396}, {"role": "user", "content": "b" * 396}] * 3
    assert growth_per_turn(opened) == 1 and 200 < growth_per_turn([*opened, *turns]) < 220


async def test_when_cheaper_a_conversation_moves_down_unless_its_cache_is_worth_more(tmp_path: Path) -> None:
    clock = FakeClock()
    # one turn's view: a move down must pay for the cache it leaves on this turn alone
    w = world(tmp_path, MemorySessions(clock), CACHED + "sessions: {move_down: when_cheaper, horizon_turns: 1}\n")
    # a short conversation has nothing cached worth keeping
    await turn(w, conversation("a hard question"), session="s1")
    moved = await turn(w, conversation("a hard question", "a medium question"), session="s1")
    assert moved.headers["x-tierwise-tier"] == "mid"
    assert "conversation moved frontier -> mid: cheaper than its cache at frontier" in (
        w.ledger.rows[-1].fallbacks or ""
    )
    # ~50k tokens the frontier has just cached: a medium follow-up stays there
    long = conversation("with a long listing " * 10_000 + "and a hard question", "a medium question")
    await turn(w, long[:2], session="s2")
    kept = await turn(w, long, session="s2")
    assert kept.headers["x-tierwise-tier"] == "frontier" and "moved" not in (w.ledger.rows[-1].fallbacks or "")
    clock.advance(301)  # past the providers' 5-minute cache: nothing left to lose
    later = await turn(w, [*long, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "medium"}], "s2")
    assert later.headers["x-tierwise-tier"] == "mid"
    up = await turn(w, conversation("a hard question", "a medium question", "now a hard one"), session="s1")
    assert up.headers["x-tierwise-tier"] == "frontier"
    assert "conversation moved mid -> frontier: leaves its cache at mid" in (w.ledger.rows[-1].fallbacks or "")
    w.engine.dispose()


async def test_a_system_prompt_other_conversations_cached_counts_as_warm(tmp_path: Path) -> None:
    """The providers cache by prefix, not by conversation: a tier that served another conversation
    with this system prompt lately holds that much of this one."""
    policy = CACHED + "sessions: {move_down: when_cheaper, horizon_turns: 1}\n"
    system = {"role": "system", "content": "You review code. " + "Rule: be thorough. " * 12_000}  # ~60k tokens

    def opening(*said: str) -> list[dict[str, Any]]:
        return [system, *conversation(*said)[1:]]

    cold = world(tmp_path / "cold", MemorySessions(FakeClock()), policy)
    await turn(cold, opening("a hard question"), session="a")
    # mid never saw this system prompt: moving there means writing 60k tokens again
    assert (await turn(cold, opening("a hard question", "a medium question"), "a")).headers[
        "x-tierwise-tier"
    ] == "frontier"
    cold.engine.dispose()

    warm = world(tmp_path / "warm", MemorySessions(FakeClock()), policy)
    await turn(warm, opening("a medium task"), session="other")  # mid serves another conversation
    await turn(warm, opening("a hard question"), session="a")
    assert (await turn(warm, opening("a hard question", "a medium question"), "a")).headers["x-tierwise-tier"] == "mid"
    warm.engine.dispose()


async def test_by_default_a_conversation_never_moves_down(tmp_path: Path) -> None:
    w = world(tmp_path, MemorySessions(FakeClock()), CACHED)
    await turn(w, conversation("a hard question"), session="s1")
    assert (await turn(w, conversation("a hard question", "a medium question"), session="s1")).headers[
        "x-tierwise-tier"
    ] == "frontier"
    w.engine.dispose()


async def test_memory_store_forgets_the_oldest_past_its_size() -> None:
    s = MemorySessions(FakeClock(), max_entries=2)
    await s.keep("k", "a", "frontier", ORDER, 60)
    await s.keep("k", "b", "frontier", ORDER, 60)
    await s.keep("k", "c", "frontier", ORDER, 60)
    assert (await s.keep("k", "a", "local", ORDER, 60)).tier == "local"
    assert (await s.keep("k", "c", "local", ORDER, 60)).tier == "frontier"
    # a tier the policy no longer has counts for nothing
    assert (await s.keep("k", "c", "mid", ["mid", "top"], 60)).tier == "mid"
    assert (await s.keep("k", "c", "local", ORDER, 60, fresh=True)).tier == "local"  # starts again


async def test_one_key_cannot_evict_another_keys_conversations() -> None:
    s = MemorySessions(FakeClock(), max_entries=100, per_owner=10)
    await s.keep("victim", "work", "frontier", ORDER, 60)
    for i in range(1_000):
        await s.keep("attacker", f"s{i}", "local", ORDER, 60)
    assert (await s.keep("victim", "work", "local", ORDER, 60)).tier == "frontier"
    for owner in range(50):  # many keys: the one holding most gives way first
        for i in range(3):
            await s.keep(f"k{owner}", f"s{i}", "local", ORDER, 60)
    assert (await s.keep("victim", "work", "local", ORDER, 60)).tier == "frontier"


async def test_an_opening_turn_without_a_session_continues_nothing(tmp_path: Path) -> None:
    """A one-turn "What is 2+2?" was served by the frontier because an earlier conversation that
    opened with the same words had moved up."""
    w = world(tmp_path, MemorySessions(FakeClock()))
    resolver, loaded = w.pipeline.resolver, w.pipeline.policy.current
    opening = [{"role": "user", "content": "What is 2+2?"}]
    res = await resolver.resolve(loaded, "auto", opening)
    assert res.tier == "local" and res.session is not None
    await resolver.keep(loaded.policy, res.session, None, "frontier")  # that conversation escalated
    follow_up = [*opening, {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}]
    assert (await resolver.resolve(loaded, "auto", follow_up)).tier == "frontier"
    assert (await resolver.resolve(loaded, "auto", opening)).tier == "local"
    w.engine.dispose()


def test_conversation_id_names_the_opening_only() -> None:
    a = conversation("a medium question", "thanks")
    b = conversation("a medium question", "something else entirely")
    assert conversation_id(a) == conversation_id(b) == conversation_id(a[:2])
    assert conversation_id(conversation("another opening", "thanks")) != conversation_id(a)
    assert valid_session("chat-42:turns_1.x") and not valid_session("") and not valid_session("a b")
    assert not valid_session("-starts-with-dash") and not valid_session("x" * 129)
