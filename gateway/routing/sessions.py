"""Per-conversation routing: a conversation keeps the tier its first turn was routed to.

Routing each turn afresh makes a conversation bounce between models, which loses prompt caches
and tool-call state. So the router's choice for a conversation is remembered for a while, and a
later turn may move it up (the router asks for more, or an answer escalated), and down only when
the caller says the move pays for the cache it leaves behind (``gateway.routing.moves``).

A conversation is named by the client (``x-tierwise-session``) or, failing that, by a hash of
what every turn of it repeats: the system prompt and the first user turn. Either way it is kept
per API key, so one client can never move another's conversations.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.chat_request import message_text
from gateway.clock import Clock

__all__ = [
    "SESSION_HEADER",
    "SESSION_PATTERN",
    "Kept",
    "MemorySessions",
    "Sessions",
    "conversation_id",
    "valid_session",
]

SESSION_HEADER = "x-tierwise-session"
SESSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_VALID = re.compile(SESSION_PATTERN)


def valid_session(value: str) -> bool:
    """A client's session name: 1-128 characters of letters, digits and ``._:-``."""
    return bool(_VALID.match(value))


def conversation_id(messages: Sequence[dict[str, Any]]) -> str:
    """A stable name for a conversation without one: its system prompt(s) and first user turn."""
    opening: list[str] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            opening.append(message_text(message.get("content")))
        elif role == "user":
            opening.append(message_text(message.get("content")))
            break
    return "h-" + hashlib.sha256(orjson.dumps(opening)).hexdigest()[:32]


@dataclass(frozen=True)
class Kept:
    """Where a conversation goes on: ``tier``; ``was`` the tier it had before this turn (None:
    it starts here)."""

    tier: str
    was: str | None = None


class Sessions(abc.ABC):
    """Where conversations' tiers are kept: in this process, or in Redis for several replicas."""

    @abc.abstractmethod
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
        """Keep ``owner``'s conversation ``session`` at ``tier`` or the higher tier it already has
        (by ``order``, cheapest first), for ``ttl_s`` more seconds. ``leave``: higher tiers it
        moves down from to ``tier``; ``fresh``: it starts here, whatever was kept under its name."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        pass


def kept_tier(kept: str | None, tier: str, order: Sequence[str], leave: Collection[str] = ()) -> str:
    """The higher of two tiers by ``order``, unless the kept one is to be left; a tier the policy
    no longer has counts for nothing."""
    if kept is None or kept not in order or kept in leave:
        return tier
    return kept if order.index(kept) > order.index(tier) else tier


class MemorySessions(Sessions):
    """One process's conversations, oldest forgotten first: past ``per_owner`` of one key's, and
    past ``max_entries`` in all from the key that holds most, so no key can evict the others'."""

    def __init__(self, clock: Clock, max_entries: int = 100_000, per_owner: int = 10_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._per_owner = per_owner
        self._owners: dict[str, OrderedDict[str, tuple[str, float]]] = {}
        self._size = 0

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
        now = self._clock.monotonic()
        kept_by = self._owners.setdefault(owner, OrderedDict())
        found = kept_by.pop(session, None)
        self._size -= found is not None
        kept = found[0] if found is not None and found[1] > now and not fresh else None
        tier = kept_tier(kept, tier, order, leave)
        kept_by[session] = (tier, now + ttl_s)
        self._size += 1
        if len(kept_by) > self._per_owner:
            kept_by.popitem(last=False)
            self._size -= 1
        while self._size > self._max:
            largest = max(self._owners.values(), key=len)
            largest.popitem(last=False)
            self._size -= 1
        return Kept(tier, kept)
