"""Whether moving a conversation down a tier pays for the prompt cache it leaves behind.

A conversation's earlier turns sit in its tier's prompt cache: staying, this turn reads that
prefix at the cache-read rate; moving, it pays the cheaper tier's full input rate for all of it.
So a move down is worth it only when this turn costs less on the cheaper tier cold than on the
kept tier warm. One turn's view is enough: later turns build a cache on the new tier at its own
(lower) rates. Escalation is not weighed here: a failed check moves a conversation up regardless.

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

__all__ = ["MIN_CACHED_PREFIX", "prefix_tokens", "worth_leaving"]

MIN_CACHED_PREFIX = 1024
_CHARS_PER_TOKEN = 4  # the usual English-text estimate; only ratios between tiers matter here


def prefix_tokens(messages: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Estimated tokens of the part a provider may have cached (up to the last assistant turn)
    and of what this turn adds after it."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    prefix = len(orjson.dumps(list(messages[: last + 1]))) // _CHARS_PER_TOKEN if last >= 0 else 0
    new = len(orjson.dumps(list(messages[last + 1 :]))) // _CHARS_PER_TOKEN
    return prefix, new


def _turn_cost(price: Price, prefix: int, new: int, warm: bool) -> float:
    read = prefix if warm and prefix >= MIN_CACHED_PREFIX else 0
    return cost_usd(price, Usage(prefix + new, REFERENCE_CALL[1], cache_read_tokens=read))


def worth_leaving(prices: Mapping[str, Price], order: Sequence[str], routed: str, prefix: int, new: int) -> list[str]:
    """The tiers above ``routed`` that a conversation kept there should leave for ``routed`` on
    this turn: those where the turn, its prefix read from their cache, costs more than on
    ``routed`` with the prefix paid in full."""
    if routed not in order or routed not in prices:
        return []
    cold = _turn_cost(prices[routed], prefix, new, warm=False)
    above = order[order.index(routed) + 1 :]
    return [t for t in above if t in prices and cold < _turn_cost(prices[t], prefix, new, warm=True)]
