"""Conversations' tiers in Redis, shared by every replica: each turn one atomic script."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import redis.asyncio as aioredis

from gateway.routing.sessions import Kept, Sessions

__all__ = ["RedisSessions"]

# KEYS[1] the conversation; ARGV: the tier asked for, the TTL in ms, the tiers to leave (space
# separated: tier names have no spaces), then the tiers cheapest first. Returns {tier, was or ''}.
# ``gateway.routing.sessions.kept_tier`` is the same rule in Python.
_KEEP = """
local kept = redis.call('GET', KEYS[1])
local tier = ARGV[1]
if kept then
  local leaving = false
  for name in string.gmatch(ARGV[3], '%S+') do
    if name == kept then leaving = true end
  end
  local k, t = nil, nil
  for i = 4, #ARGV do
    if ARGV[i] == kept then k = i end
    if ARGV[i] == tier then t = i end
  end
  if k and t and k > t and not leaving then tier = kept end
end
redis.call('SET', KEYS[1], tier, 'PX', ARGV[2])
return {tier, kept or ''}
"""


class RedisSessions(Sessions):
    def __init__(self, url: str, prefix: str = "tierwise") -> None:
        self._r: Any = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._p = prefix
        self._keep = self._r.register_script(_KEEP)

    async def keep(
        self,
        owner: str,
        session: str,
        tier: str,
        order: Sequence[str],
        ttl_s: float,
        *,
        fresh: bool = False,
        leave: Collection[str] = (),
    ) -> Kept:
        key = f"{self._p}:session:{owner}:{session}"
        if fresh:
            await self._r.set(key, tier, px=int(ttl_s * 1000))
            return Kept(tier)
        kept, was = await self._keep(keys=[key], args=[tier, int(ttl_s * 1000), " ".join(leave), *order])
        return Kept(_text(kept), _text(was) or None)

    async def warmth(self, owner: str, session: str, order: Sequence[str]) -> dict[str, int]:
        found = await self._r.mget([self._warm_key(owner, session, t) for t in order])
        return {t: int(v) for t, v in zip(order, found, strict=True) if v is not None}

    async def warmed(self, owner: str, session: str, tier: str, tokens: int, ttl_s: float) -> None:
        await self._r.set(self._warm_key(owner, session, tier), tokens, px=max(1, int(ttl_s * 1000)))

    def _warm_key(self, owner: str, session: str, tier: str) -> str:
        return f"{self._p}:warm:{owner}:{session}:{tier}"

    async def aclose(self) -> None:
        await self._r.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
