"""Conversations' tiers in Redis, shared by every replica: each turn one atomic script."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from gateway.routing.sessions import Sessions

__all__ = ["RedisSessions"]

# KEYS[1] the conversation; ARGV: the tier asked for, the TTL in ms, then the tiers cheapest first.
_RAISE = """
local kept = redis.call('GET', KEYS[1])
local tier = ARGV[1]
if kept then
  local k, t = nil, nil
  for i = 3, #ARGV do
    if ARGV[i] == kept then k = i end
    if ARGV[i] == tier then t = i end
  end
  if k and t and k > t then tier = kept end
end
redis.call('SET', KEYS[1], tier, 'PX', ARGV[2])
return tier
"""


class RedisSessions(Sessions):
    def __init__(self, url: str, prefix: str = "tierwise") -> None:
        self._r: Any = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._p = prefix
        self._raise = self._r.register_script(_RAISE)

    async def raise_to(
        self, owner: str, session: str, tier: str, order: Sequence[str], ttl_s: float, fresh: bool = False
    ) -> str:
        key = f"{self._p}:session:{owner}:{session}"
        if fresh:
            await self._r.set(key, tier, px=int(ttl_s * 1000))
            return tier
        kept = await self._raise(keys=[key], args=[tier, int(ttl_s * 1000), *order])
        return kept.decode() if isinstance(kept, bytes) else str(kept)

    async def aclose(self) -> None:
        await self._r.aclose()
