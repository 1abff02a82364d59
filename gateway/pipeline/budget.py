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

from gateway.dispatch import Plan, PlanStep
from gateway.policy.loader import LoadedPolicy
from gateway.policy.pricing import cost_usd

__all__ = ["IMAGE_TOKENS", "output_limit", "worst_case_usd"]

IMAGE_TOKENS = 2_000  # above the largest per-image charge of the providers we price (~1.6k)


def output_limit(body: dict[str, Any], step: PlanStep, loaded: LoadedPolicy) -> int:
    """Output tokens this step may produce: the client's limit, else the deployment's default,
    else the policy's; never above the deployment's cap."""
    dep = step.deployment
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    limit = int(asked or dep.default_max_tokens or loaded.policy.limits.budget_default_max_tokens)
    cap = loaded.output_cap(dep.name)
    return min(limit, cap) if cap else limit


def worst_case_usd(body: dict[str, Any], plan: Plan, loaded: LoadedPolicy, steps: int = 1) -> float:
    """``steps``: calls one request may pay for (an escalation pays for each)."""
    images = 0
    image_bytes = 0
    for part in _parts(body):
        url = (part.get("image_url") or {}).get("url") if part.get("type") == "image_url" else None
        if isinstance(url, str):
            images += 1
            image_bytes += len(url)
    prompt = (len(orjson.dumps(body)) - image_bytes) // 2 + 16 + IMAGE_TOKENS * images
    n = int(body.get("n") or 1)
    worst = max((cost_usd(s.price, prompt, output_limit(body, s, loaded) * n) for s in plan.steps), default=0.0)
    return worst * steps


def _parts(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            yield from (p for p in content if isinstance(p, dict))
