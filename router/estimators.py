"""Per-tier quality estimators and a per-tier cost model, fitted with scikit-learn and kept as
plain arrays (so an artifact needs no pickle and scoring needs no sklearn at serve time).

Features: the prompt embedding plus cheap scalars (log length, scaled by the artifact's
``length_scale``). For each tier:
  * quality: logistic regression -> P(the tier's answer is good); fractional scores are
    split into a positive and a negative row weighted by the score;
  * cost: ridge regression on log(cost) -> expected cost of the call, relative to the mean
    frontier call. Long prompts and tasks with long answers cost more, so routing them down
    saves more: this term is worth ~10 points of cost at 95% quality on RouterBench dev.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_C", "LENGTH_SCALE", "TierModels", "TrainingSet", "fit_tier_models", "text_features"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


DEFAULT_C = 0.3
"""Inverse L2 strength of the quality estimators, chosen on held-out MMLU subjects and
RouterBench 5-fold CV together (1.0 fits RouterBench's tasks as well and unseen subjects worse)."""

LENGTH_SCALE = 1.0
"""log1p(length) enters unscaled: at the old 0.1 the L2 penalty muted the one feature that
carries over to unseen tasks (prompt length beats the embedding on held-out MMLU subjects)."""


def text_features(full_lengths: Sequence[int], scale: float = LENGTH_SCALE) -> F32:
    """Cheap scalar features of the whole prompt (the embedding only sees its tail)."""
    lengths = np.asarray(full_lengths, dtype=np.float32)
    return (np.log1p(lengths) * np.float32(scale)).reshape(-1, 1).astype(np.float32)


@dataclass
class TrainingSet:
    """Rows for one tier: features, targets in [0, 1], weights, and (optionally) cost."""

    features: F32
    scores: F64
    weights: F64
    costs: F64 | None  # USD per call, NaN where unknown


@dataclass
class TierModels:
    tiers: list[str]
    quality_w: F32  # (tiers, dim)
    quality_b: F32  # (tiers,)
    cost_w: F32  # (tiers, dim)
    cost_b: F32  # (tiers,)

    def quality(self, features: F32) -> F32:
        z = features @ self.quality_w.T + self.quality_b
        out: F32 = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return out

    def cost(self, features: F32) -> F32:
        out: F32 = np.exp(features @ self.cost_w.T + self.cost_b).astype(np.float32)
        return out


def fit_tier_models(
    tiers: Sequence[str],
    sets: Sequence[TrainingSet],
    *,
    c: float = DEFAULT_C,
    cost_alpha: float = 1.0,
    default_cost_ratio: Sequence[float] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> TierModels:
    from sklearn.linear_model import LogisticRegression, Ridge  # noqa: PLC0415 - only when training

    dim = sets[0].features.shape[1]
    qw = np.zeros((len(tiers), dim), np.float32)
    qb = np.zeros(len(tiers), np.float32)
    cw = np.zeros((len(tiers), dim), np.float32)
    cb = np.zeros(len(tiers), np.float32)
    costed: list[float] = []
    for i, (tier, ts) in enumerate(zip(tiers, sets, strict=True)):
        progress(f"fitting quality estimator for tier {tier} on {len(ts.scores)} rows")
        # A fractional score s becomes a positive row of weight s and a negative of weight 1-s.
        x = np.vstack([ts.features, ts.features])
        y = np.concatenate([np.ones(len(ts.scores)), np.zeros(len(ts.scores))])
        w = np.concatenate([ts.weights * ts.scores, ts.weights * (1 - ts.scores)])
        keep = w > 0
        model = LogisticRegression(C=c, max_iter=3000)
        model.fit(x[keep], y[keep], sample_weight=w[keep])
        qw[i], qb[i] = model.coef_[0], model.intercept_[0]

        if ts.costs is not None and np.isfinite(ts.costs).sum() >= 20:
            ok = np.isfinite(ts.costs) & (ts.costs > 0)
            progress(f"fitting cost model for tier {tier} on {int(ok.sum())} priced rows")
            ridge = Ridge(alpha=cost_alpha).fit(ts.features[ok], np.log(ts.costs[ok]))
            cw[i], cb[i] = ridge.coef_, ridge.intercept_
            costed.append(float(np.mean(ts.costs[ok])))
        else:
            costed.append(math.nan)
    # Costs are relative: the mean frontier call costs 1. Tiers without priced data get a
    # constant from ``default_cost_ratio`` (e.g. from policy prices).
    top = costed[-1] if math.isfinite(costed[-1]) else 1.0
    cb -= np.float32(math.log(top))
    for i, mean in enumerate(costed):
        if not math.isfinite(mean):
            ratio = default_cost_ratio[i] if default_cost_ratio else (i + 1) / len(tiers)
            cw[i] = 0.0
            cb[i] = np.float32(math.log(max(ratio, 1e-6)))
    return TierModels(list(tiers), qw, qb, cw, cb)
