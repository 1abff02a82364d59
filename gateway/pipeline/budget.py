"""The most a request can cost, reserved against its key's budget before any call is made.

Counted from everything the provider bills: the whole request as sent (messages, tools, schemas,
tool results; 2 characters a token, which over-counts every tokenizer we know), a fixed worst
case per image (their data is not billed by size), and the output limit on each deployment the
plan may reach, times ``n``; never less for a cache: a prompt written to Anthropic's cache costs
more than an uncached one.
"""

from __future__ import annotations

from typing import Any

from gateway.dispatch import Plan
from gateway.policy.pricing import cost_usd
from gateway.providers import anthropic_fields
from gateway.usage import Usage, prompt_tokens_bound

__all__ = ["worst_case_tokens", "worst_case_usd"]


def worst_case_tokens(body: dict[str, Any], plan: Plan, steps: int = 1) -> int:
    """Tokens this request may use on any deployment the plan reaches (held against a key's tpm)."""
    out = max((s.output_limit(body) for s in plan.steps), default=0) * int(body.get("n") or 1)
    return (prompt_tokens_bound(body) + out) * steps


def worst_case_usd(body: dict[str, Any], plan: Plan, steps: int = 1) -> float:
    """``steps``: calls one request may pay for (an escalation pays for each). The prompt is
    priced uncached (no cache read is ever assumed), and where the request carries cache
    breakpoints for Anthropic, as all written for an hour if that is dearer."""
    prompt = prompt_tokens_bound(body)
    n = int(body.get("n") or 1)
    writes = "cache_control" in (body.get(anthropic_fields.MARKER) or ())
    worst = 0.0
    for s in plan.steps:
        out = s.output_limit(body) * n
        worst = max(worst, cost_usd(s.price, Usage(prompt, out)))
        if writes and anthropic_fields.takes(s.deployment):
            written = Usage(prompt, out, cache_write_tokens=prompt, cache_write_1h_tokens=prompt)
            worst = max(worst, cost_usd(s.price, written))
    return worst * steps
