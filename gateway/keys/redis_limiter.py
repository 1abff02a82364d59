"""The Redis backend: counters shared by every replica, each check-and-add one Lua script (one
round trip; redis-py's own work is most of a keyed request's cost, so there are as few as can be)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from gateway.keys.limiter import Admission, BudgetAsk, Limiter, RateAsk, Reservation, day_month, to_micros

__all__ = ["RedisLimiter"]

# A request's admission in one round trip: its rate check (KEYS 1-2, when ARGV[1] is 1), then
# its budget reservation (KEYS 3-4, when ARGV[5] is 1). Returns {outcome, requests, tokens, day,
# month}: 1 admitted; 0 over a rate limit (nothing counted); -1 over a budget (the rate counted,
# as for any refused request); then the minute's counts and the periods' spend (micros), this
# request's included.
_ADMIT = """
local used_r, used_t, spent_d, spent_m = 0, 0, 0, 0
if ARGV[1] == '1' then
  local rpm, tpm, hold = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  if tpm >= 0 and hold > tpm then hold = tpm end
  local r = tonumber(redis.call('GET', KEYS[1]) or '0')
  local t = tonumber(redis.call('GET', KEYS[2]) or '0')
  if rpm >= 0 and r + 1 > rpm then return {0, r, t} end
  if tpm >= 0 and t + hold > tpm then return {0, r, t} end
  used_r = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], 120)
  used_t = t
  if tpm >= 0 then
    used_t = redis.call('INCRBY', KEYS[2], hold)
    redis.call('EXPIRE', KEYS[2], 120)
  end
end
if ARGV[5] == '1' then
  local a, daily, monthly = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  local d = tonumber(redis.call('GET', KEYS[3]) or '0')
  local m = tonumber(redis.call('GET', KEYS[4]) or '0')
  if daily >= 0 and d + a > daily then return {-1, used_r, used_t} end
  if monthly >= 0 and m + a > monthly then return {-1, used_r, used_t} end
  spent_d = redis.call('INCRBY', KEYS[3], a)
  redis.call('EXPIRE', KEYS[3], 172800)
  spent_m = redis.call('INCRBY', KEYS[4], a)
  redis.call('EXPIRE', KEYS[4], 3024000)
end
return {1, used_r, used_t, spent_d, spent_m}
"""


# A settlement: the difference between the reservation and the real cost, on both periods.
_SETTLE = """
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[1])
return 1
"""


class RedisLimiter(Limiter):
    def __init__(self, url: str, prefix: str = "tierwise") -> None:
        self._r: Any = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._p = prefix
        self._admit = self._r.register_script(_ADMIT)
        self._settle = self._r.register_script(_SETTLE)

    def _money(self, key_id: str, period: str) -> str:
        return f"{self._p}:spend:{key_id}:{period}"

    async def admit(self, key_id: str, now: float, rate: RateAsk | None, budget: BudgetAsk | None) -> Admission:
        minute = int(now // 60)
        day, month = day_month(now)
        rpm, tpm, tokens = rate or (None, None, 0)
        usd, daily, monthly = budget or (0.0, None, None)
        amount = to_micros(usd)
        keys = [f"{self._p}:rpm:{key_id}:{minute}", f"{self._p}:tpm:{key_id}:{minute}"]
        keys += [self._money(key_id, day), self._money(key_id, month)]
        args = [int(rate is not None), _limit(rpm), _limit(tpm), tokens]
        args += [int(budget is not None), amount, _money_limit(daily), _money_limit(monthly)]
        outcome, requests, tokens_used, *spent = (int(v) for v in await self._admit(keys=keys, args=args))
        if outcome == 0:
            return Admission(wait=self.retry_after(now))
        used = (requests, tokens_used) if rate is not None else None
        if outcome == -1:
            return Admission(over_budget=True, used=used)
        if budget is None:
            return Admission(used=used)
        return Admission(reservation=Reservation(key_id, amount, day, month), used=used, spent=(spent[0], spent[1]))

    async def rate_used(self, key_id: str, now: float) -> tuple[int, int]:
        minute = int(now // 60)
        r, t = await self._r.mget(f"{self._p}:rpm:{key_id}:{minute}", f"{self._p}:tpm:{key_id}:{minute}")
        return int(r or 0), int(t or 0)

    async def check_rate(
        self, key_id: str, rpm: int | None, tpm: int | None, now: float, tokens: int = 0
    ) -> float | None:
        return (await self.admit(key_id, now, (rpm, tpm, tokens), None)).wait

    async def add_tokens(self, key_id: str, tokens: int, now: float) -> None:
        k = f"{self._p}:tpm:{key_id}:{int(now // 60)}"
        pipe = self._r.pipeline(transaction=True)
        pipe.incrby(k, tokens)
        pipe.expire(k, 120)
        await pipe.execute()

    async def reserve(
        self, key_id: str, usd: float, daily: float | None, monthly: float | None, now: float
    ) -> Reservation | None:
        return (await self.admit(key_id, now, None, (usd, daily, monthly))).reservation

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        delta = to_micros(actual_usd) - reservation.micros
        keys = [self._money(reservation.key_id, reservation.day), self._money(reservation.key_id, reservation.month)]
        await self._settle(keys=keys, args=[delta])  # a script: a MULTI/EXEC pipeline cost twice the CPU

    async def spent(self, key_id: str, now: float) -> tuple[float, float]:
        day, month = day_month(now)
        d, m = await self._r.mget(self._money(key_id, day), self._money(key_id, month))
        return int(d or 0) / 1e6, int(m or 0) / 1e6

    async def seed(self, key_id: str, day_usd: float, month_usd: float, now: float) -> None:
        day, month = day_month(now)
        await self._r.set(self._money(key_id, day), to_micros(day_usd), nx=True, ex=172800)
        await self._r.set(self._money(key_id, month), to_micros(month_usd), nx=True, ex=3024000)

    async def reset(self, key_id: str, day_usd: float, month_usd: float, now: float) -> None:
        day, month = day_month(now)
        await self._r.set(self._money(key_id, day), to_micros(day_usd), ex=172800)
        await self._r.set(self._money(key_id, month), to_micros(month_usd), ex=3024000)

    async def aclose(self) -> None:
        await self._r.aclose()


def _limit(value: int | None) -> int:
    """A limit as the scripts take it: -1 for none."""
    return -1 if value is None else value


def _money_limit(usd: float | None) -> int:
    return -1 if usd is None else to_micros(usd)
