"""The most a request can cost, reserved against its key's budget before any call is made.

Counted from everything the provider bills: the whole request as sent (messages, tools, schemas,
tool results; 2 characters a token, which over-counts every tokenizer we know), a fixed worst
case per image (their data is not billed by size), and the output limit on each deployment the
plan may reach, times ``n``.
"""

from __future__ import annotations

from typing import Any

from gateway.dispatch import Plan
from gateway.policy.pricing import cost_usd
from gateway.usage import Usage, prompt_tokens_bound

__all__ = ["worst_case_tokens", "worst_case_usd"]


def worst_case_tokens(body: dict[str, Any], plan: Plan, steps: int = 1) -> int:
    """Tokens this request may use on any deployment the plan reaches (held against a key's tpm)."""
    out = max((s.output_limit(body) for s in plan.steps), default=0) * int(body.get("n") or 1)
    return (prompt_tokens_bound(body) + out) * steps


def worst_case_usd(body: dict[str, Any], plan: Plan, steps: int = 1) -> float:
    """``steps``: calls one request may pay for (an escalation pays for each)."""
    prompt = prompt_tokens_bound(body)
    n = int(body.get("n") or 1)
    # Uncached: what a prompt costs when no cache is read (writes are not sent to any provider yet).
    worst = max((cost_usd(s.price, Usage(prompt, s.output_limit(body) * n)) for s in plan.steps), default=0.0)
    return worst * steps
