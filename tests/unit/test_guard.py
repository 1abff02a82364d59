"""Keys, rate windows and budgets with a clock moved by hand (no sleeps, no server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import AuthenticationError, PermissionDeniedError, QuotaExceededError, RateLimitError
from gateway.keys import Guard, KeyStore, MemoryLimiter
from gateway.keys.guard import bearer_token
from gateway.keys.limiter import Limiter, Reservation
from gateway.ledger import create_schema, make_engine
from tests.unit.fakes import FakeClock


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    create_schema(engine)
    yield KeyStore(engine, clock=FakeClock())
    engine.dispose()


def guard(store: KeyStore, clock: FakeClock, limiter: Limiter | None = None) -> Guard:
    return Guard(store, limiter or MemoryLimiter(), master_key="sk-master", clock=clock)


def test_bearer_token() -> None:
    assert bearer_token("Bearer sk-tw-abc") == "sk-tw-abc"
    assert bearer_token("bearer  x ") == "x"
    assert bearer_token("Basic abc") == "" and bearer_token(None) == ""


async def test_open_mode_serves_loopback_only(store: KeyStore) -> None:
    g = guard(store, FakeClock())
    assert await g.authenticate("", "127.0.0.1") is None
    assert await g.authenticate("anything", "::1") is None
    with pytest.raises(AuthenticationError):
        await g.authenticate("", "203.0.113.9")


async def test_keys_expiry_and_revocation(store: KeyStore) -> None:
    clock = FakeClock()
    g = guard(store, clock)
    expires = datetime.fromtimestamp(clock.now() + 60, UTC)
    key, info = store.create(owner="a", expires_at=expires)
    identity = await g.authenticate(key, "203.0.113.9")
    assert identity is not None and identity.key_id == info["id"]
    with pytest.raises(AuthenticationError, match="missing API key"):
        await g.authenticate("", "203.0.113.9")
    with pytest.raises(AuthenticationError, match="invalid or revoked"):
        await g.authenticate(key + "x", "127.0.0.1")  # once keys exist, loopback needs one too
    clock.advance(61)
    store.clock.advance(61)  # type: ignore[attr-defined]
    with pytest.raises(AuthenticationError) as info_exc:
        await g.authenticate(key, "203.0.113.9")
    assert info_exc.value.code == "expired_api_key"
    assert g.is_master("sk-master") and not g.is_master("sk-master2") and not g.is_master("")


async def test_rate_limit_is_a_fixed_minute_window(store: KeyStore) -> None:
    clock = FakeClock()  # starts on a minute boundary
    g = guard(store, clock)
    key, _ = store.create(rpm_limit=2)
    identity = await g.authenticate(key, "127.0.0.1")
    *_, headers = await g.admit(identity)
    assert headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "60s",
    }
    clock.advance(30.25)
    *_, headers = await g.admit(identity)
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-reset-requests"] == "30s"
    clock.advance(14.75)
    with pytest.raises(RateLimitError) as info:
        await g.admit(identity)
    assert info.value.headers["retry-after"] == "15" and info.value.headers["x-ratelimit-remaining-requests"] == "0"
    clock.advance(14.5)
    with pytest.raises(RateLimitError) as info:
        await g.admit(identity)
    assert info.value.headers["x-ratelimit-reset-requests"] == "500ms"
    clock.advance(0.5)  # the next minute
    *_, headers = await g.admit(identity)
    assert headers["x-ratelimit-remaining-requests"] == "1"


async def test_budget_reserves_the_worst_case_and_settles_the_real_cost(store: KeyStore) -> None:
    clock = FakeClock()
    limiter = MemoryLimiter()
    g = guard(store, clock, limiter)
    key, info = store.create(budget_daily_usd=0.01)
    identity = await g.authenticate(key, "127.0.0.1")
    _, first, _ = await g.admit(identity, worst_usd=0.006)
    with pytest.raises(QuotaExceededError):
        await g.admit(identity, worst_usd=0.006)  # 0.012 would not fit, though the first may cost less
    await g.settle(identity, first, 0.001, tokens=10)
    assert await limiter.spent(info["id"], clock.now()) == (0.001, 0.001)
    await g.admit(identity, worst_usd=0.006)  # now it fits
    assert await g.budget_left(identity) == pytest.approx(1 - 0.007 / 0.01)


async def test_answers_show_the_budget_left_after_this_requests_worst_case(store: KeyStore) -> None:
    clock = FakeClock()  # 2027-01-15 08:00 UTC
    g = guard(store, clock, MemoryLimiter())
    key, _ = store.create(budget_daily_usd=0.01, budget_monthly_usd=2.0)
    identity = await g.authenticate(key, "127.0.0.1")
    _, first, headers = await g.admit(identity, worst_usd=0.006)
    assert headers == {
        "x-tierwise-budget-limit-daily-usd": "0.01",
        "x-tierwise-budget-remaining-daily-usd": "0.004000",
        "x-tierwise-budget-reset-daily": "16h0m0s",
        "x-tierwise-budget-limit-monthly-usd": "2",
        "x-tierwise-budget-remaining-monthly-usd": "1.994000",
        "x-tierwise-budget-reset-monthly": "400h0m0s",
    }
    await g.settle(identity, first, 0.001, tokens=10)
    clock.advance(59.5)
    *_, headers = await g.admit(identity, worst_usd=0.002)
    assert headers["x-tierwise-budget-remaining-daily-usd"] == "0.007000"  # 0.001 spent + 0.002 held
    assert headers["x-tierwise-budget-reset-daily"] == "15h59m1s"
    key2, _ = store.create(rpm_limit=5)
    assert not any("budget" in h for h in (await g.admit(await g.authenticate(key2, "127.0.0.1")))[2])


def test_authorize_routes_and_tiers(store: KeyStore) -> None:
    key, _ = store.create(allowed_routes=["cheap"], allowed_tiers=["local"])
    identity = store.lookup(key)
    Guard.authorize(identity, {"cheap", "tier/local"}, "local")
    with pytest.raises(PermissionDeniedError):
        Guard.authorize(identity, {"best", "tier/frontier"}, "frontier")
    Guard.authorize(None, {"anything"}, "frontier")  # open mode


class _BrokenLimiter(MemoryLimiter):
    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        raise ConnectionError("redis went away")


async def test_a_failing_settlement_never_fails_the_request(store: KeyStore) -> None:
    clock = FakeClock()
    g = guard(store, clock, _BrokenLimiter())
    key, _ = store.create(budget_daily_usd=1.0)
    identity = await g.authenticate(key, "127.0.0.1")
    _, reservation, _ = await g.admit(identity, worst_usd=0.1)
    await g.settle(identity, reservation, 0.01, tokens=5)  # does not raise
    assert g.unsettled == 1 and g.degraded and "settlement" in g.degraded


@pytest.mark.parametrize(
    ("routes", "tiers", "fence"),
    [
        (None, None, None),
        (["cheap"], None, {"local"}),
        (["auto"], None, {"local", "mid", "frontier"}),
        (["auto"], ["local", "mid"], {"local", "mid"}),
        (["tier/mid", "frontier-a"], None, {"mid", "frontier"}),
        (["gpt-4o"], None, set()),  # a name the policy does not know reaches nothing
    ],
)
def test_a_keys_fence_is_the_tiers_its_names_reach(
    routes: list[str] | None, tiers: list[str] | None, fence: set[str] | None
) -> None:
    import textwrap

    import yaml

    from gateway.keys.store import Identity
    from gateway.policy.models import Policy
    from tests.conftest import three_tier_policy

    policy = Policy.model_validate(yaml.safe_load(textwrap.dedent(three_tier_policy("http://127.0.0.1:9"))))
    identity = Identity(
        "k", "o", "t", frozenset(routes) if routes else None, frozenset(tiers) if tiers else None,
        None, None, None, None, None,
    )  # fmt: skip
    assert Guard.fence(identity, policy) == (frozenset(fence) if fence is not None else None)


async def test_a_failing_key_store_is_asked_once_then_known_keys_are_served_at_once(tmp_path: Path) -> None:
    import asyncio

    from sqlalchemy.exc import OperationalError

    from gateway.errors import ServiceUnavailableError

    class Flaky(KeyStore):
        down = False
        asked = 0

        def lookup(self, key: str):  # type: ignore[no-untyped-def]
            if self.down:
                self.asked += 1
                raise OperationalError("select", {}, Exception("gone"))
            return super().lookup(key)

        def ping(self) -> None:
            if self.down:
                raise OperationalError("select 1", {}, Exception("gone"))

    engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    create_schema(engine)
    clock = FakeClock()
    store = Flaky(engine, clock=clock)
    g = guard(store, clock)
    known, _ = store.create()
    unknown = "sk-tw-" + "x" * 43
    assert await g.authenticate(known, "10.0.0.1") is not None
    store.down = True
    store._cache.clear()  # a replica that has not seen the key lately: it must ask the store
    with pytest.raises(ServiceUnavailableError):
        await g.authenticate(known, "10.0.0.1")
    assert store.asked == 1 and g.key_store_down is not None
    for token in (known, unknown):
        with pytest.raises(ServiceUnavailableError):
            await g.authenticate(token, "10.0.0.1")
    assert store.asked == 1  # not asked again while it is down: no request waits for it
    store.down = False
    assert g._probe is not None  # the probe runs on its own, every key_store_retry_s of the (fake) clock
    await asyncio.wait_for(g._probe, timeout=10)
    assert g.key_store_down is None and clock.slept == [g.key_store_retry_s] * len(clock.slept)
    assert await g.authenticate(known, "10.0.0.1") is not None
    engine.dispose()
