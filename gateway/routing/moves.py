"""Whether moving a conversation down a tier pays for the prompt cache it leaves behind.

Each tier a conversation was served on holds its prompt, as of that turn, in the provider's
prompt cache for a few minutes (``Sessions.warmed``). This turn's prompt starts with that prefix,
so on a warm tier the prefix is read at the cache-read rate and only the rest is written; on a
cold one all of it is paid for (at the cache-write rate where the provider charges one: Anthropic
bills writes at 1.25x input, OpenAI nothing). A conversation kept on a higher tier moves down to
the router's tier only when that costs less over this turn and the next few (``horizon``): a
move to a cold tier pays for writing the whole history there once, and is paid back by the
cheaper turns after it. Escalation is not weighed: a failed check moves a conversation up.

Conversations that open with the same system prompt share its cache (``shared_prefix``): a
tier that never served this conversation may still hold that much of it.

Providers cache no prompt under 1,024 tokens (OpenAI: "Prompt caching", automatic from 1,024;
Anthropic: "Prompt caching", minimum 1,024 for Sonnet and Opus, more for Haiku), so a short
conversation has no cache to lose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.policy.models import Price
from gateway.policy.pricing import REFERENCE_CALL, cost_usd
from gateway.usage import Usage

__all__ = ["MIN_CACHED_PREFIX", "growth_per_turn", "prompt_tokens", "shared_prefix", "turn_cost", "worth_leaving"]

MIN_CACHED_PREFIX = 1024
_CHARS_PER_TOKEN = 4  # the usual English-text estimate; only ratios between tiers matter here


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """An estimate of a conversation's prompt tokens, the same each turn for the same messages."""
    return len(orjson.dumps(list(messages))) // _CHARS_PER_TOKEN


def growth_per_turn(messages: Sequence[dict[str, Any]]) -> int:
    """What each turn has added to the conversation after its opening (the system prompt and
    first request, which may be a long document), on average."""
    first = next((i for i, m in enumerate(messages) if m.get("role") not in ("system", "developer")), len(messages))
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    return max(1, prompt_tokens(messages[first + 1 :]) // turns) if turns else 1


def shared_prefix(messages: Sequence[dict[str, Any]]) -> tuple[str, int] | None:
    """A name and size for the system prompt the conversation opens with: many conversations
    share it, so a tier that served any of them lately holds it in cache even for a conversation
    it never served. The name cannot be a client's session name (those start alphanumeric)."""
    system = []
    for message in messages:
        if message.get("role") not in ("system", "developer"):
            break
        system.append(message)
    if not system:
        return None
    text = orjson.dumps(system)
    return "~prefix:" + hashlib.sha256(text).hexdigest()[:32], len(text) // _CHARS_PER_TOKEN


def turn_cost(price: Price, tokens: int, warm: int) -> float:
    """A turn of ``tokens`` prompt tokens whose first ``warm`` are in this tier's cache."""
    read = min(warm, tokens) if warm >= MIN_CACHED_PREFIX else 0
    write = tokens - read if price.cache_write_per_1m is not None else 0
    return cost_usd(price, Usage(tokens, REFERENCE_CALL[1], cache_read_tokens=read, cache_write_tokens=write))


def worth_leaving(
    prices: Mapping[str, Price],
    order: Sequence[str],
    routed: str,
    tokens: int,
    warmth: Mapping[str, int],
    horizon: int = 1,
    growth: int = 0,
) -> list[str]:
    """The tiers above ``routed`` that a conversation kept there should leave for ``routed`` on
    this turn: those where this turn and the ``horizon - 1`` after it cost more, each tier with
    what its cache holds (``warmth``). After this turn either tier is warm, and each later turn
    adds ``growth`` tokens (the conversation's average so far: one turn's may be a short
    instruction, the next a long tool result)."""
    if routed not in order or routed not in prices:
        return []
    low = prices[routed]
    later = horizon - 1
    move = turn_cost(low, tokens, warmth.get(routed, 0)) + later * turn_cost(low, tokens, tokens - growth)
    out = []
    for tier in order[order.index(routed) + 1 :]:
        if tier not in prices:
            continue
        high = prices[tier]
        stay = turn_cost(high, tokens, warmth.get(tier, 0)) + later * turn_cost(high, tokens, tokens - growth)
        if move < stay:
            out.append(tier)
    return out
