"""Escalation: when a cheaper tier's answer visibly fails, the next tier up answers instead.

The checks are the quality module's (one set for signals and escalation); ``low_confidence``
reads token log-probabilities, asked of the upstream for the purpose and taken out of the answer
again unless the client asked for them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.dispatch import Plan, PlanStep
from gateway.policy.loader import LoadedPolicy
from gateway.policy.models import EscalateConfig
from gateway.policy.pricing import cost_usd
from gateway.providers.base import UpstreamStream
from gateway.quality.confidence import Confidence, StreamConfidence, confidence_of
from gateway.routing.resolve import Resolution
from gateway.usage import Usage

__all__ = [
    "Step",
    "asks_logprobs",
    "confidence_in",
    "escalation_for",
    "held_confidence",
    "higher",
    "hold",
    "needs_whole",
    "reasons",
    "strip_event_logprobs",
    "strip_logprobs",
    "with_logprobs",
]


def escalation_for(loaded: LoadedPolicy, res: Resolution | None) -> EscalateConfig | None:
    """The escalation that applies: the route's, else the policy's; never for a request pinned
    to one deployment (it asked for that model and no other)."""
    if res is None or not res.fallback:
        return None
    route = loaded.policy.route(res.route) if res.route else None
    cfg = route.escalate if route is not None and route.escalate is not None else loaded.policy.escalate
    return cfg if cfg.on else None


@dataclass(frozen=True)
class Step:
    """One paid answer of a request: what it cost, and why it was not the last."""

    step: PlanStep
    usage: Usage
    reasons: tuple[str, ...] = ()

    @property
    def cost(self) -> float:
        return cost_usd(self.step.price, self.usage)

    def as_json(self) -> dict[str, Any]:
        return {
            "tier": self.step.tier,
            "deployment": self.step.deployment.name,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "cache_read_tokens": self.usage.cache_read_tokens,
            "cache_write_tokens": self.usage.cache_write_tokens,
            "cost_usd": self.cost,
            "reasons": list(self.reasons),
        }


def asks_logprobs(cfg: EscalateConfig | None, body: Mapping[str, Any]) -> bool:
    """Whether the gateway must ask for log-probabilities the client did not ask for."""
    return cfg is not None and "low_confidence" in cfg.on and not body.get("logprobs")


def with_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    # top_logprobs too: llama.cpp's server returns none without it
    return {**body, "logprobs": True, "top_logprobs": 0}


def strip_logprobs(payload: dict[str, Any]) -> dict[str, Any]:
    for choice in payload.get("choices") or []:
        if isinstance(choice, dict):
            choice.pop("logprobs", None)
    return payload


def reasons(cfg: EscalateConfig, failed: Sequence[str], confidence: Confidence | None) -> tuple[str, ...]:
    """The configured checks the answer fails (empty: it stands); ``failed``: every check it fails."""
    found = [c for c in failed if c in cfg.on]
    low = cfg.min_confidence is not None and confidence is not None and confidence.lowest_k_mean < cfg.min_confidence
    if "low_confidence" in cfg.on and low:
        found.append("low_confidence")
    return tuple(found)


def confidence_in(payload: Mapping[str, Any]) -> Confidence | None:
    choices = payload.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    logprobs = first.get("logprobs") if isinstance(first, dict) else None
    return confidence_of(logprobs.get("content")) if isinstance(logprobs, dict) else None


# Checks that can only run on a whole answer; refusal and low_confidence show in its opening.
_WHOLE_ANSWER = {"truncated", "empty"}
_JSON = {"invalid_json", "schema_mismatch"}
_TOOLS = {"tool_args_invalid", "tool_not_called"}


def needs_whole(cfg: EscalateConfig, body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    wants_json = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    on = set(cfg.on)
    return bool(on & _WHOLE_ANSWER or (wants_json and on & _JSON) or (body.get("tools") and on & _TOOLS))


async def hold(stream: UpstreamStream, cfg: EscalateConfig, body: Mapping[str, Any]) -> list[bytes]:
    """Read the stream's events until the checks can run on them: all of them, or the first
    ``buffer_tokens`` tokens' worth (a token is ~4 characters of text) when that is enough."""
    whole = needs_whole(cfg, body)
    held: list[bytes] = []
    async for event in stream.events:
        held.append(event)
        if not whole and stream.completion_chars >= cfg.buffer_tokens * 4:
            break
    return held


def held_confidence(held: Sequence[bytes], cfg: EscalateConfig) -> Confidence | None:
    """Log-probability confidence of the held events (only when low_confidence is asked for)."""
    if "low_confidence" not in cfg.on:
        return None
    scorer = StreamConfidence(first_k=cfg.buffer_tokens)
    for event in held:
        for payload in _payloads(event):
            scorer.feed(payload)
    return scorer.confidence()


def strip_event_logprobs(event: bytes) -> bytes:
    """One SSE event without the log-probabilities the gateway asked for on its own account."""
    out = []
    for line in event.split(b"\n"):
        data = line[5:].strip() if line.startswith(b"data:") else b""
        clean = line
        if data.startswith(b"{"):
            try:
                clean = b"data: " + orjson.dumps(strip_logprobs(orjson.loads(data)))
            except orjson.JSONDecodeError:
                pass
        out.append(clean)
    return b"\n".join(out)


def _payloads(event: bytes) -> list[dict[str, Any]]:
    found = []
    for line in event.split(b"\n"):
        data = line[5:].strip() if line.startswith(b"data:") else b""
        if data.startswith(b"{"):
            try:
                value = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def higher(plan: Plan, tier: str) -> Plan | None:
    """The plan's steps on tiers above ``tier`` (escalation never retries the same tier)."""
    tiers = list(dict.fromkeys(s.tier for s in plan.steps))
    if tier not in tiers:
        return None
    above = set(tiers[tiers.index(tier) + 1 :])
    steps = [s for s in plan.steps if s.tier in above]
    return Plan(steps, steps[0].tier) if steps else None
