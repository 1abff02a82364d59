"""The most a request can cost, reserved against its key's budget before any call is made.

Counted from everything the provider bills: the whole request as sent (messages, tools, schemas,
tool results; 2 characters a token, which over-counts every tokenizer we know), a fixed worst
case per image (their data is not billed by size), and the output limit on each deployment the
plan may reach, times ``n``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from gateway.dispatch import Plan
from gateway.policy.pricing import cost_usd

__all__ = ["IMAGE_TOKENS", "prompt_tokens_bound", "worst_case_tokens", "worst_case_usd"]

IMAGE_TOKENS = 2_000  # above the largest per-image charge of the providers we price (~1.6k)


def prompt_tokens_bound(body: dict[str, Any], chars_per_token: int = 2) -> int:
    """Prompt tokens the provider may bill for this request: every character of it (messages,
    tools, schemas, tool results), plus a worst case per image, whose data is not billed by size."""
    images = 0
    image_bytes = 0
    for part in _parts(body):
        url = (part.get("image_url") or {}).get("url") if part.get("type") == "image_url" else None
        if isinstance(url, str):
            images += 1
            image_bytes += len(url)
    return (len(orjson.dumps(body)) - image_bytes) // chars_per_token + 16 + IMAGE_TOKENS * images


def worst_case_tokens(body: dict[str, Any], plan: Plan, steps: int = 1) -> int:
    """Tokens this request may use on any deployment the plan reaches (held against a key's tpm)."""
    out = max((s.output_limit(body) for s in plan.steps), default=0) * int(body.get("n") or 1)
    return (prompt_tokens_bound(body) + out) * steps


def worst_case_usd(body: dict[str, Any], plan: Plan, steps: int = 1) -> float:
    """``steps``: calls one request may pay for (an escalation pays for each)."""
    prompt = prompt_tokens_bound(body)
    n = int(body.get("n") or 1)
    worst = max((cost_usd(s.price, prompt, s.output_limit(body) * n) for s in plan.steps), default=0.0)
    return worst * steps


def _parts(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            yield from (p for p in content if isinstance(p, dict))
