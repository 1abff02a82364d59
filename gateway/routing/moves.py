"""Whether moving a conversation down a tier pays for the prompt cache it leaves behind.

Each tier a conversation was served on holds its prompt, as of that turn, in the provider's
prompt cache for a few minutes (``Sessions.warmed``). This turn's prompt starts with that prefix,
so on a warm tier the prefix is read at the cache-read rate and only the rest is written; on a
cold one all of it is paid for (at the cache-write rate where the provider charges one: Anthropic
bills writes at 1.25x input, OpenAI nothing). A conversation kept on a higher tier moves down to
the router's tier only when this turn costs less there. One turn's view is enough: the next turn
weighs the caches again. Escalation is not weighed: a failed check moves a conversation up.

Providers cache no prompt under 1,024 tokens (OpenAI: "Prompt caching", automatic from 1,024;
Anthropic: "Prompt caching", minimum 1,024 for Sonnet and Opus, more for Haiku), so a short
conversation has no cache to lose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.policy.models import Price
from gateway.policy.pricing import REFERENCE_CALL, cost_usd
from gateway.usage import Usage

__all__ = ["MIN_CACHED_PREFIX", "prompt_tokens", "turn_cost", "worth_leaving"]

MIN_CACHED_PREFIX = 1024
_CHARS_PER_TOKEN = 4  # the usual English-text estimate; only ratios between tiers matter here


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """An estimate of a conversation's prompt tokens, the same each turn for the same messages."""
    return len(orjson.dumps(list(messages))) // _CHARS_PER_TOKEN


def turn_cost(price: Price, tokens: int, warm: int) -> float:
    """A turn of ``tokens`` prompt tokens whose first ``warm`` are in this tier's cache."""
    read = min(warm, tokens) if warm >= MIN_CACHED_PREFIX else 0
    write = tokens - read if price.cache_write_per_1m is not None else 0
    return cost_usd(price, Usage(tokens, REFERENCE_CALL[1], cache_read_tokens=read, cache_write_tokens=write))


def worth_leaving(
    prices: Mapping[str, Price], order: Sequence[str], routed: str, tokens: int, warmth: Mapping[str, int]
) -> list[str]:
    """The tiers above ``routed`` that a conversation kept there should leave for ``routed`` on
    this turn: those where the turn costs more, each with what its cache holds (``warmth``)."""
    if routed not in order or routed not in prices:
        return []
    there = turn_cost(prices[routed], tokens, warmth.get(routed, 0))
    above = order[order.index(routed) + 1 :]
    return [t for t in above if t in prices and there < turn_cost(prices[t], tokens, warmth.get(t, 0))]
