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

    @abc.abstractmethod
    async def warmth(self, owner: str, session: str, order: Sequence[str]) -> dict[str, int]:
        """Prompt tokens of the conversation's latest turn on each tier (by ``order``) whose
        provider may still hold them in its prompt cache."""

    @abc.abstractmethod
    async def warmed(self, owner: str, session: str, tier: str, tokens: int, ttl_s: float) -> None:
        """``tier`` just served the conversation a prompt of ``tokens``: its provider caches
        that prefix for about ``ttl_s``."""

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
        self._owners: dict[str, OrderedDict[str, _Conversation]] = {}
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
        found = self._take(owner, session)
        live = found is not None and found.until > now and not fresh
        kept = found.tier if found is not None and live else None
        tier = kept_tier(kept, tier, order, leave)
        self._put(owner, session, _Conversation(tier, now + ttl_s, found.warm if found is not None and live else {}))
        return Kept(tier, kept)

    async def warmth(self, owner: str, session: str, order: Sequence[str]) -> dict[str, int]:
        found = self._owners[owner].get(session) if owner in self._owners else None
        now = self._clock.monotonic()
        warm = found.warm if found is not None else {}
        return {t: warm[t][0] for t in order if t in warm and warm[t][1] > now}

    async def warmed(self, owner: str, session: str, tier: str, tokens: int, ttl_s: float) -> None:
        now = self._clock.monotonic()
        found = self._take(owner, session) or _Conversation("", now, {})  # a tier kept by no one
        found.warm[tier] = (tokens, now + ttl_s)
        self._put(owner, session, found)

    def _take(self, owner: str, session: str) -> _Conversation | None:
        found = self._owners[owner].pop(session, None) if owner in self._owners else None
        self._size -= found is not None
        return found

    def _put(self, owner: str, session: str, conversation: _Conversation) -> None:
        """Newest last; past the bounds the oldest go."""
        kept_by = self._owners.setdefault(owner, OrderedDict())
        kept_by[session] = conversation
        self._size += 1
        if len(kept_by) > self._per_owner:
            kept_by.popitem(last=False)
            self._size -= 1
        while self._size > self._max:
            largest = max(self._owners.values(), key=len)
            largest.popitem(last=False)
            self._size -= 1


@dataclass(slots=True)
class _Conversation:
    tier: str
    until: float  # monotonic
    warm: dict[str, tuple[int, float]]  # tier -> (prompt tokens, cached until)
