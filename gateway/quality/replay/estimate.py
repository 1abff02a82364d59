"""A replayed policy's figures: tier shares, cost per 1k requests and savings with 95% intervals,
quality relative to the reference tier with its unknowns bounded."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.policy.loader import LoadedPolicy
from gateway.policy.pricing import cost_usd
from gateway.quality.replay.decide import Decided
from gateway.quality.replay.judged import JudgedRequest
from gateway.quality.stats import Z95, Estimate, Sums
from gateway.usage import Usage

__all__ = ["Interval", "Replayed", "estimate", "quality_of"]


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def _ratio(w: npt.NDArray[np.float64], x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> Interval:
    """Σwx / Σwy with a 95% interval by the delta method (linearised around the ratio)."""
    r = float((w * x).sum() / (w * y).sum())
    se = float(math.sqrt(((w * (x - r * y)) ** 2).sum()) / (w * y).sum())
    return Interval(r, r - Z95 * se, r + Z95 * se)


@dataclass(frozen=True)
class Replayed:
    label: str
    source: str
    router: str
    router_version: str | None
    frontier: str  # the policy's top tier: the base of its savings
    shares: dict[str, float]  # tier -> weighted share of the replayed requests
    cost_per_1k: Interval  # USD per 1,000 requests
    frontier_cost_per_1k: float  # the same requests all on the top tier, at the policy's prices
    saved: Interval  # against all on the top tier
    quality: Estimate | None  # relative to the reference tier, where the judged sample tells
    quality_bounds: tuple[float, float]  # as if every unknown were inadequate .. adequate
    judged: int  # samples whose verdict covers the chosen tier
    unknown: int  # samples moved to a tier not judged for them (or a verdict not read)


@dataclass(frozen=True)
class Quality:
    known: Sums  # samples whose verdict covers the chosen tier
    unknown_w: float
    unknown: int

    @property
    def bounds(self) -> tuple[float, float]:
        total = self.known.w + self.unknown_w
        return self.known.wx / total, (self.known.wx + self.unknown_w) / total


def quality_of(judged: list[JudgedRequest], tiers: list[str]) -> Quality:
    known, unknown_w, unknown = Sums(), 0.0, 0
    for r, t in zip(judged, tiers, strict=True):
        q = r.quality(t)
        if q is None:
            unknown_w += r.weight
            unknown += 1
        else:
            known += Sums(1, r.weight, r.weight * r.weight, r.weight * q)
    return Quality(known, unknown_w, unknown)


def estimate(
    label: str, loaded: LoadedPolicy, judged: list[JudgedRequest], tiers: list[str], decided: Decided
) -> Replayed:
    policy = loaded.policy
    top = policy.frontier.name
    price = {t.name: loaded.price(t.deployments[0].name) for t in policy.tiers}

    def cost(r: JudgedRequest, tier: str) -> float:
        answer = r.answer_tokens.get(tier, r.answer_tokens[r.served_tier])
        return cost_usd(price[tier], Usage(r.prompt_tokens, answer))

    w = np.array([r.weight for r in judged])
    c = np.array([cost(r, t) for r, t in zip(judged, tiers, strict=True)])
    f = np.array([cost(r, top) for r in judged])
    relative = _ratio(w, c, f) if f.sum() > 0 else Interval(1.0, 1.0, 1.0)
    quality = quality_of(judged, tiers)
    chosen = np.array(tiers)
    return Replayed(
        label=label,
        source=str(loaded.source),
        router=decided.router,
        router_version=decided.version,
        frontier=top,
        shares={t.name: float(w[chosen == t.name].sum() / w.sum()) for t in policy.tiers},
        cost_per_1k=_ratio(w, c * 1000, np.ones_like(w)),
        frontier_cost_per_1k=float((w * f).sum() / w.sum() * 1000),
        saved=Interval(1 - relative.mean, 1 - relative.high, 1 - relative.low),
        quality=quality.known.estimate(),
        quality_bounds=quality.bounds,
        judged=quality.known.n,
        unknown=quality.unknown,
    )
