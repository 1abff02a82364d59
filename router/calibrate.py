"""Calibration: a target in the policy owner's terms -> the decision rule's cost weight.

Targets (exactly one):
  * ``frontier_share``: the share of requests sent to the top tier (needs only prompts);
  * ``quality``: a fraction of always-frontier quality, e.g. 0.95 (needs outcomes);
  * ``max_cost_per_1k_usd``: a ceiling on average cost per 1,000 requests (needs costs).
The sweep picks, among weights meeting the target, the one that is cheapest (quality target)
or best (share and cost targets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from router.core import choose
from router.estimators import F32

__all__ = ["SweepPoint", "candidate_weights", "fit_cost_weight", "sweep", "write_cost_weight"]

WEIGHTS = np.concatenate([[0.0], np.logspace(-4, 3, 351)])


@dataclass(frozen=True)
class SweepPoint:
    weight: float
    frontier_share: float
    choice: npt.NDArray[np.int_]


def candidate_weights(quality: F32, cost: F32, limit: int = 2000) -> npt.NDArray[np.float64]:
    """The fixed grid plus, midway between neighbours, the weights at which some row switches
    between two tiers. Prompts of one task get near-equal scores and flip together; a grid
    alone can jump from 37% to 16% frontier share in one step and miss a 30% target."""
    flips = []
    for i in range(quality.shape[1]):
        for j in range(i + 1, quality.shape[1]):
            dq = quality[:, j].astype(np.float64) - quality[:, i]
            dc = cost[:, j].astype(np.float64) - cost[:, i]
            with np.errstate(divide="ignore", invalid="ignore"):
                w = dq / dc
            flips.append(w[(dc > 0) & (dq > 0) & np.isfinite(w)])
    points = np.unique(np.concatenate(flips)) if flips else np.empty(0)
    if len(points) > limit:
        points = np.quantile(points, np.linspace(0, 1, limit))
    mids = (points[1:] + points[:-1]) / 2 if len(points) > 1 else points
    out: npt.NDArray[np.float64] = np.unique(np.concatenate([WEIGHTS, mids]))
    return out


def sweep(quality: F32, cost: F32) -> list[SweepPoint]:
    top = quality.shape[1] - 1
    out = []
    for w in candidate_weights(quality, cost):
        ch = choose(quality, cost, float(w))
        out.append(SweepPoint(float(w), float(np.mean(ch == top)), ch))
    return out


def fit_cost_weight(
    pred_quality: F32,
    pred_cost: F32,
    scores: npt.NDArray[np.float64] | None = None,
    costs: npt.NDArray[np.float64] | None = None,
    *,
    quality: float | None = None,
    frontier_share: float | None = None,
    max_cost_per_1k_usd: float | None = None,
) -> float:
    given = [v for v in (quality, frontier_share, max_cost_per_1k_usd) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one target: quality, frontier_share or max_cost_per_1k_usd")
    points = sweep(pred_quality, pred_cost)
    idx = np.arange(len(pred_quality))
    if frontier_share is not None:
        # share falls as the weight grows: the smallest weight at or under the target share
        for p in points:
            if p.frontier_share <= frontier_share + 1e-9:
                return p.weight
        return points[-1].weight
    if scores is None or costs is None:
        raise ValueError("quality and cost targets need outcome data (scores and costs)")
    if quality is not None:
        goal = quality * float(scores[:, -1].mean())
        ok = [p.weight for p in points if float(scores[idx, p.choice].mean()) >= goal - 1e-12]
        return max(ok) if ok else 0.0
    assert max_cost_per_1k_usd is not None
    ok = [p.weight for p in points if float(costs[idx, p.choice].mean()) * 1000 <= max_cost_per_1k_usd]
    return min(ok) if ok else points[-1].weight


def write_cost_weight(policy_path: Path, weight: float) -> None:
    """Set ``router.cost_weight`` in a policy file, keeping its comments and layout."""
    lines = policy_path.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if re.match(r"^router:\s*(#.*)?$", line))
    except StopIteration:
        raise ValueError(f"{policy_path}: no top-level `router:` section to calibrate") from None
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i] and not lines[i][0].isspace() and not lines[i].startswith("#")
        ),
        len(lines),
    )
    value = f"{weight:.6g}"
    for i in range(start + 1, end):
        if re.match(r"^\s+cost_weight\s*:", lines[i]):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines[i] = f"{indent}cost_weight: {value}  # written by `tierwise router calibrate`"
            break
    else:
        lines.insert(start + 1, f"  cost_weight: {value}  # written by `tierwise router calibrate`")
    policy_path.write_text("\n".join(lines) + "\n")
