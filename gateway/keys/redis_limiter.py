"""The Redis backend: counters shared by every replica, each check-and-add one Lua script."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from gateway.keys.limiter import Limiter, Reservation, day_month, to_micros

__all__ = ["RedisLimiter"]

_RESERVE = """
local d = tonumber(redis.call('GET', KEYS[1]) or '0')
local m = tonumber(redis.call('GET', KEYS[2]) or '0')
local a = tonumber(ARGV[1])
if tonumber(ARGV[2]) >= 0 and d + a > tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[3]) >= 0 and m + a > tonumber(ARGV[3]) then return 0 end
redis.call('INCRBY', KEYS[1], a)
redis.call('EXPIRE', KEYS[1], 172800)
redis.call('INCRBY', KEYS[2], a)
redis.call('EXPIRE', KEYS[2], 3024000)
return 1
"""

_RATE = """
local r = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = tonumber(redis.call('GET', KEYS[2]) or '0')
local tpm = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
if tpm >= 0 and hold > tpm then hold = tpm end
if tonumber(ARGV[1]) >= 0 and r + 1 > tonumber(ARGV[1]) then return 0 end
if tpm >= 0 and t + hold > tpm then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 120)
if tpm >= 0 then
  redis.call('INCRBY', KEYS[2], hold)
  redis.call('EXPIRE', KEYS[2], 120)
end
return 1
"""


class RedisLimiter(Limiter):
    def __init__(self, url: str, prefix: str = "tierwise") -> None:
        self._r: Any = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._p = prefix
        self._reserve = self._r.register_script(_RESERVE)
        self._rate = self._r.register_script(_RATE)

    def _money(self, key_id: str, period: str) -> str:
        return f"{self._p}:spend:{key_id}:{period}"

    async def check_rate(
        self, key_id: str, rpm: int | None, tpm: int | None, now: float, tokens: int = 0
    ) -> float | None:
        minute = int(now // 60)
        keys = [f"{self._p}:rpm:{key_id}:{minute}", f"{self._p}:tpm:{key_id}:{minute}"]
        args = [rpm if rpm is not None else -1, tpm if tpm is not None else -1, tokens]
        ok = await self._rate(keys=keys, args=args)
        return None if int(ok) == 1 else self.retry_after(now)

    async def add_tokens(self, key_id: str, tokens: int, now: float) -> None:
        k = f"{self._p}:tpm:{key_id}:{int(now // 60)}"
        pipe = self._r.pipeline(transaction=True)
        pipe.incrby(k, tokens)
        pipe.expire(k, 120)
        await pipe.execute()

    async def reserve(
        self, key_id: str, usd: float, daily: float | None, monthly: float | None, now: float
    ) -> Reservation | None:
        day, month = day_month(now)
        amount = to_micros(usd)
        ok = await self._reserve(
            keys=[self._money(key_id, day), self._money(key_id, month)],
            args=[
                amount,
                to_micros(daily) if daily is not None else -1,
                to_micros(monthly) if monthly is not None else -1,
            ],
        )
        return Reservation(key_id, amount, day, month) if int(ok) == 1 else None

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        delta = to_micros(actual_usd) - reservation.micros
        pipe = self._r.pipeline(transaction=True)
        pipe.incrby(self._money(reservation.key_id, reservation.day), delta)
        pipe.incrby(self._money(reservation.key_id, reservation.month), delta)
        await pipe.execute()

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
