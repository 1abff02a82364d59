"""Routing metrics: the cost-quality curve, cost at x% of frontier quality, AIQ, APGR, CPT.

All take plain arrays, so any router (ours or a baseline) is judged the same way.

* An operating point is (cost, quality): total cost of the choices over the rows (USD, or
  calls to the top tier where the data has no cost) and mean score.
* Mixing two operating points (send a share of traffic by each) is always possible, so
  curves are read on their upper convex hull, made non-decreasing (as RouterBench's AIQ).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["apgr_cpt", "aiq", "cost_at_quality", "hull", "operating_point"]

Array = npt.NDArray[np.float64]


def operating_point(choice: npt.NDArray[np.int_], scores: Array, costs: Array) -> tuple[float, float]:
    idx = np.arange(len(choice))
    return float(costs[idx, choice].sum()), float(scores[idx, choice].mean())


def hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper-left convex hull, non-decreasing in quality: the frontier reachable by mixing."""
    pts = sorted(set(points))
    # Keep only points that improve quality as cost grows (dominated ones can never help).
    best: list[tuple[float, float]] = []
    for c, q in pts:
        if not best or q > best[-1][1]:
            best.append((c, q))
    out: list[tuple[float, float]] = []
    for p in best:
        while len(out) >= 2:
            (c1, q1), (c2, q2) = out[-2], out[-1]
            # drop out[-1] if it lies on or below the segment out[-2] -> p
            if (q2 - q1) * (p[0] - c1) <= (p[1] - q1) * (c2 - c1):
                out.pop()
            else:
                break
        out.append(p)
    return out


def _hull_value(h: list[tuple[float, float]], c: float) -> float:
    if c <= h[0][0]:
        return h[0][1]
    for (c1, q1), (c2, q2) in itertools.pairwise(h):
        if c <= c2:
            return q1 + (q2 - q1) * (c - c1) / (c2 - c1)
    return h[-1][1]


def cost_at_quality(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """Least cost on the hull at which quality reaches ``target``; None if never reached."""
    h = hull(points)
    if h[0][1] >= target:
        return h[0][0]
    for (c1, q1), (c2, q2) in itertools.pairwise(h):
        if q2 >= target:
            return c1 + (c2 - c1) * (target - q1) / (q2 - q1)
    return None


def aiq(points: Sequence[tuple[float, float]], max_cost: float) -> float:
    """RouterBench's AIQ: mean hull quality over the cost range, cost normalised by ``max_cost``.

    The hull is extended flat to ``max_cost``: a router can always spend less than allowed.
    """
    h = [(c / max_cost, q) for c, q in hull(points)]
    lo = h[0][0]
    if lo >= 1.0:
        return h[0][1]
    xs = np.linspace(lo, 1.0, 401)
    ys = np.array([_hull_value(h, float(x)) for x in xs])
    return float(np.trapezoid(ys, xs) / (1.0 - lo))


def apgr_cpt(
    strong_pref: Array, weak: Array, strong: Array, levels: Sequence[float] = (0.5, 0.8)
) -> tuple[float, list[float | None]]:
    """RouteLLM's two-model metrics. ``strong_pref`` ranks rows: highest go to the strong model first.

    Returns APGR (average performance gap recovered over the share of strong calls, 0..1 for a
    router between the two models) and CPT(x) for each level: the share of strong calls needed
    to recover x of the gap (None if never).
    """
    n = len(strong_pref)
    order = np.argsort(-strong_pref, kind="stable")
    gain = (strong - weak)[order]
    # quality when the top-k rows go to the strong model, k = 0..n
    q = (weak.sum() + np.concatenate([[0.0], np.cumsum(gain)])) / n
    q_weak, q_strong = weak.mean(), strong.mean()
    gap = q_strong - q_weak
    if gap <= 0:
        return float("nan"), [None for _ in levels]
    pgr = (q - q_weak) / gap
    apgr = float(np.trapezoid(pgr, np.linspace(0, 1, n + 1)))
    cpts: list[float | None] = []
    for level in levels:
        hit = np.nonzero(pgr >= level - 1e-12)[0]
        cpts.append(float(hit[0] / n) if len(hit) else None)
    return apgr, cpts
