"""Both limits backends admit, refuse and count alike: in-process, and Redis (one script a request)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.keys.limiter import Limiter, MemoryLimiter
from gateway.keys.redis_limiter import RedisLimiter

NOW = 1_764_000_000.0  # a minute boundary: every call below falls in one rate window


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    redis_url = request.getfixturevalue("redis_url")
    backend = RedisLimiter(redis_url, prefix=f"test-{uuid.uuid4().hex}")  # no other test's counters
    yield backend
    await backend.aclose()


async def test_one_admission_counts_the_rate_and_reserves_the_budget(limiter: Limiter) -> None:
    rate, budget = (2, None, 0), (0.006, 0.01, 1.0)
    first = await limiter.admit("k", NOW, rate, budget)
    assert first.wait is None and not first.over_budget
    assert first.reservation is not None and first.reservation.micros == 6000
    # 0.012 would not fit today: refused for the budget, counted against the rate like any request
    second = await limiter.admit("k", NOW, rate, budget)
    assert second.over_budget and second.reservation is None and second.wait is None
    assert await limiter.spent("k", NOW) == (0.006, 0.006)
    # the third request in the minute is over rpm 2: refused before any money is reserved
    third = await limiter.admit("k", NOW + 1, rate, (0.001, 0.01, 1.0))
    assert third.wait == 59 and third.reservation is None
    assert await limiter.spent("k", NOW) == (0.006, 0.006)
    await limiter.settle(first.reservation, 0.001)
    assert await limiter.spent("k", NOW) == (0.001, 0.001)
    later = await limiter.admit("k", NOW + 60, rate, budget)  # a new minute, money left
    assert later.reservation is not None


async def test_tokens_held_are_capped_at_the_limit_and_fill_the_window(limiter: Limiter) -> None:
    held = await limiter.admit("k", NOW, (None, 100, 500), None)  # a worst case above the limit holds the limit
    assert held.wait is None and held.reservation is None
    assert (await limiter.admit("k", NOW, (None, 100, 1), None)).wait == 60
    assert await limiter.check_rate("other", None, 100, NOW, 40) is None
    await limiter.add_tokens("other", 70, NOW)  # the answer used more than it held
    assert await limiter.check_rate("other", None, 100, NOW, 1) == 60


async def test_an_admission_reports_the_minutes_counts_this_request_included(limiter: Limiter) -> None:
    first = await limiter.admit("k", NOW, (5, 1_000, 300), (0.001, 1.0, None))
    assert first.used == (1, 300)
    assert (await limiter.admit("k", NOW + 5, (5, 1_000, 700), None)).used == (2, 1_000)  # the window is full
    assert (await limiter.admit("k", NOW + 6, (5, 1_000, 1), None)).used is None  # refused: nothing counted
    assert (await limiter.admit("k", NOW + 60, (5, None, 50), None)).used == (1, 0)  # a new minute; no token limit
    assert (await limiter.admit("k", NOW, None, (0.001, 1.0, None))).used is None  # no rate asked
    assert await limiter.rate_used("k", NOW) == (2, 1_000)


async def test_reserve_alone_is_the_same_admission(limiter: Limiter) -> None:
    reservation = await limiter.reserve("k", 0.004, None, 0.005, NOW)
    assert reservation is not None and reservation.micros == 4000
    assert await limiter.reserve("k", 0.002, None, 0.005, NOW) is None
    assert (await limiter.admit("k", NOW, None, None)).reservation is None  # nothing asked, nothing held
