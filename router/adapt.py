"""Adapt a shipped router artifact to a policy's own tiers from judged samples.

A judged sample is a prompt's features (as ``Router.features`` builds them) and, per policy
tier, an observed adequacy in [0, 1] or NaN where that tier was not observed (a gateway sees
two tiers per sample: the one that answered and the one shadowed). The base artifact is the
prior: each tier's quality estimator is refitted as

    z = a * z_base(f) + v . f + c          (logit; z_base is the base estimator mapped by rank)

which stays linear in f, so the result is the same ``TierModels`` arrays (w = a*w_base + v,
b = a*b_base + c) and serving does not change. Methods:

  * ``shrink``  a = 1, ridge penalty on v: the base weights plus a correction pulled to zero;
  * ``stack``   as shrink, and a is fitted too (the base score as a feature, Platt-style);
  * ``warm``    the ``router train`` objective started from the base weights, stopped early;
  * ``scratch`` the ``router train`` objective from zero (the baseline without a prior);
  * ``bank``    the prior is the tier's model in the base artifact's model bank (``router.bank``):
                its ability where the bank knows the model's name; where not, the ability of
                the model the base's tier of the same rank was built as (the average if none);
                the ability (k + 1 numbers) is located from the samples, then a shrink
                correction is fitted on top. A known model needs no samples at all.

The prior's strength is fixed, not tuned on the samples: ``shrink`` and ``stack`` penalise v
with ``router train``'s own L2 strength (1/C), centred on the base instead of zero, and the loss
is summed over samples, so a few samples barely move the base and many let the data speak.
(Choosing the penalty by cross-validated log-loss kept the base far too often: log-loss
rewards each tier's calibration, routing needs the tiers' differences; see bench/README.md.)
Tiers observed fewer than ``MIN_TIER_SAMPLES`` times keep the base estimator. The cost model is
the base one mapped by rank, re-priced to the observed call costs (a gateway knows each call's
price exactly); the default cost weight is calibrated to the target quality on cross-fitted
predictions of the samples.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from router.artifact import Artifact
from router.bank import Bank
from router.calibrate import fit_cost_weight
from router.data import read_rows, tier_matrix
from router.estimators import DEFAULT_C, F32, F64, TierModels, text_features
from router.evaluate import select_tiers

__all__ = [
    "METHODS",
    "MIN_CALIBRATION_SAMPLES",
    "MIN_TIER_SAMPLES",
    "OBSERVE",
    "JudgedSamples",
    "adapt",
    "draw_samples",
    "observed_samples",
    "sample_ids",
    "stored_features",
]

METHODS = ("shrink", "stack", "warm", "scratch", "bank")
MIN_TIER_SAMPLES = 20
"""A tier observed fewer times keeps the base estimator (mapped by rank)."""
MIN_CALIBRATION_SAMPLES = 50
"""Fewer samples keep the base artifact's cost weight: a quality target read off a few dozen
0/1 verdicts moves the weight by more than the base's own calibration is off."""

PENALTY = 1.0 / DEFAULT_C  # on v, for shrink and stack
WARM_STEPS = 20  # L-BFGS steps from the base (50 reach the scratch optimum on these sizes)
INTERCEPT_PENALTY = 0.1  # a weak prior on c: a tier never seen failing is not promised P = 1
ABILITY_PENALTY = 3.0  # on a located ability's distance from its prior (bank): tens of samples move it
SCALE_PENALTY = 0.1  # a weak pull of a towards 1 (stack)
REFERENCE_LOGIT = 7.0  # P = 0.999: the judge's reference tier is adequate by definition
FOLDS = 5
OBSERVE = ("full", "partial", "pairwise")


@dataclass
class JudgedSamples:
    """Per sample: features (n, dim), adequacy per policy tier (n, tiers; NaN = not observed),
    an optional weight (inverse sampling rate) and optional observed USD cost per call (NaN = none)."""

    features: F32
    scores: F64
    weights: F64 | None = None
    costs: F64 | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.scores.ndim != 2 or len(self.scores) != n:
            raise ValueError(f"scores must be (samples, tiers); got {self.scores.shape} for {n} samples")
        finite = self.scores[np.isfinite(self.scores)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise ValueError("adequacy scores must lie in [0, 1] (NaN = not observed)")
        if self.weights is not None and (self.weights.shape != (n,) or np.any(self.weights < 0)):
            raise ValueError("weights must be (samples,) and non-negative")
        if self.costs is not None and self.costs.shape != self.scores.shape:
            raise ValueError("costs must have the shape of scores")


@dataclass(frozen=True)
class _Fit:
    v: F64  # correction (or, for warm/scratch, the whole weight vector)
    c: float
    a: float  # weight on the base logit: 1 for shrink, fitted for stack, 0 for warm/scratch


def _loss(z: F64, s: F64, w: F64) -> float:
    """Weighted log-loss with fractional targets: s*log p + (1-s)*log(1-p), p = sigmoid(z)."""
    return float(np.sum(w * (np.logaddexp(0.0, z) - s * z)))


def _solve(
    design: F64,
    fixed: F64,
    s: F64,
    w: F64,
    penalty: F64,
    centre: F64,
    start: F64,
    max_iter: int = 50,
    newton: bool = True,
) -> F64:
    """argmin over theta of the weighted log-loss of z = fixed + design @ theta plus
    sum(penalty * (theta - centre)^2) / 2: Newton with step halving (d is a few hundred), or
    ``max_iter`` L-BFGS steps when ``newton`` is off (early stopping is then the regulariser)."""

    def objective(theta: F64) -> tuple[float, F64]:
        z = fixed + design @ theta
        r = w * (1.0 / (1.0 + np.exp(-z)) - s)
        d = theta - centre
        return _loss(z, s, w) + 0.5 * float(penalty @ (d * d)), design.T @ r + penalty * d

    if not newton:
        from scipy.optimize import minimize  # noqa: PLC0415 - only the warm method needs it

        res = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        out: F64 = res.x
        return out
    theta = start.copy()
    value, grad = objective(theta)
    for _ in range(max_iter):
        z = fixed + design @ theta
        p = 1.0 / (1.0 + np.exp(-z))
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4:
            cand = theta - t * step
            cand_value, cand_grad = objective(cand)
            if cand_value <= value:
                break
            t /= 2
        else:
            break
        converged = value - cand_value < 1e-9 * max(1.0, abs(value))
        theta, value, grad = cand, cand_value, cand_grad
        if converged:
            break
    return theta


def _fit(method: str, x: F64, s: F64, w: F64, base_w: F64, base_b: float) -> _Fit:
    n, d = x.shape
    ones = np.ones((n, 1))
    if method in ("shrink", "stack"):
        offset = x @ base_w + base_b
        free = method == "stack"
        design = np.hstack([x, ones, offset[:, None]] if free else [x, ones])
        penalty = np.concatenate([np.full(d, PENALTY), [INTERCEPT_PENALTY], [SCALE_PENALTY] if free else []])
        centre = np.concatenate([np.zeros(d + 1), [1.0] if free else []])
        theta = _solve(design, np.zeros(n) if free else offset, s, w, penalty, centre, centre.copy())
        return _Fit(theta[:d], float(theta[d]), float(theta[-1]) if free else 1.0)
    # warm / scratch: the objective `router train` minimises (sklearn's C, intercept unpenalised)
    design = np.hstack([x, ones])
    penalty = np.append(np.full(d, 1.0 / DEFAULT_C), 0.0)
    if method == "warm":
        start = np.append(base_w, base_b)
        theta = _solve(design, np.zeros(n), s, w, penalty, np.zeros(d + 1), start, WARM_STEPS, newton=False)
    else:
        theta = _solve(design, np.zeros(n), s, w, penalty, np.zeros(d + 1), np.zeros(d + 1))
    return _Fit(theta[:d], float(theta[d]), 0.0)


def _locate(x: F64, s: F64, w: F64, bank: Bank, theta: F64, b: float) -> tuple[F64, float]:
    """A model's ability (theta, b) from its samples, pulled towards the prior (theta, b)."""
    k = len(theta)
    design = np.hstack([x @ bank.a.T, np.ones((len(x), 1))])
    penalty = np.concatenate([np.full(k, ABILITY_PENALTY), [INTERCEPT_PENALTY]])
    centre = np.append(theta, b)
    located = _solve(design, x @ bank.w0, s, w, penalty, centre, centre.copy())
    return located[:k], float(located[k])


def _bank_prior(bank: Bank, name: str | None, stand_ins: Sequence[str] | None) -> tuple[F64, float, str]:
    """Where a tier starts in the bank: its model's ability; for a name the bank does not know,
    the ability of the model the base artifact's tier of the same rank stands for (a policy's
    cheapest tier is more like the base's cheapest than like the average model), else the
    bank's average."""
    theta, b, known = bank.ability(name)
    if known:
        return theta, b, "bank: its ability"
    stand_in = next((m for m in stand_ins or () if bank.find(m) is not None), None)
    if stand_in is None:
        return theta, b, "bank: the average (name not in the bank)"
    theta, b, _ = bank.ability(stand_in)
    return theta, b, f"bank: {stand_in}'s ability, the base's tier of this rank (name not in the bank)"


def _tier_fit(
    method: str, x: F64, s: F64, w: F64, base_w: F64, base_b: float, prior: tuple[Bank, F64, float] | None
) -> tuple[F64, float, _Fit]:
    """A tier's estimator (weights, bias) from its samples, and the correction fitted."""
    if prior is not None:
        bank, theta, b = prior
        base_w, base_b = bank.estimator(*_locate(x, s, w, bank, theta, b))
        if len(s) < MIN_TIER_SAMPLES:
            return base_w, base_b, _Fit(np.zeros_like(base_w), 0.0, 1.0)
        method = "shrink"
    fit = _fit(method, x, s, w, base_w, base_b)
    return fit.a * base_w + fit.v, fit.a * base_b + fit.c, fit


def _strength(method: str) -> dict[str, float]:
    if method == "bank":
        return {"ability_penalty": ABILITY_PENALTY, "penalty": PENALTY, "intercept_penalty": INTERCEPT_PENALTY}
    if method in ("shrink", "stack"):
        return {"penalty": PENALTY, "intercept_penalty": INTERCEPT_PENALTY}
    return {"steps": WARM_STEPS} if method == "warm" else {"C": DEFAULT_C}


def _reprice(base: TierModels, cols: list[int], samples: JudgedSamples, w: F64) -> tuple[F32, F32, dict[str, Any]]:
    """The base cost model mapped by rank, each tier's level moved to its observed mean cost
    relative to the top tier's (the shape over prompts is the base model's)."""
    cw = base.cost_w[cols].copy()
    cb = base.cost_b[cols].copy()
    report: dict[str, Any] = {"method": "base cost model mapped by rank"}
    if samples.costs is None:
        return cw, cb, report
    pred = np.exp(samples.features.astype(np.float64) @ cw.T.astype(np.float64) + cb)
    ratio = np.full(len(cols), np.nan)
    for i in range(len(cols)):
        ok = np.isfinite(samples.costs[:, i]) & (samples.costs[:, i] > 0)
        if ok.sum() >= 5:
            ratio[i] = float((w[ok] * samples.costs[ok, i]).sum() / (w[ok] * pred[ok, i]).sum())
    if not math.isfinite(ratio[-1]):
        report["note"] = "top tier has no observed costs: kept the base prices"
        return cw, cb, report
    for i in range(len(cols)):
        if math.isfinite(ratio[i]):
            cb[i] += np.float32(math.log(ratio[i] / ratio[-1]))
    report["method"] = "base cost model mapped by rank, re-priced to observed costs"
    report["repriced_tiers"] = int(np.isfinite(ratio).sum())
    return cw, cb, report


def _calibrate(
    models: TierModels,
    oof_quality: F64,
    samples: JudgedSamples,
    target: float,
    fallback: float,
) -> tuple[float, dict[str, Any]]:
    n = len(samples.features)
    if n < MIN_CALIBRATION_SAMPLES:
        return fallback, {
            "method": f"kept the base cost weight (fewer than {MIN_CALIBRATION_SAMPLES} samples)",
            "target_quality": target,
            "rows": n,
            "cost_weight": fallback,
        }
    # Unobserved tiers count at their cross-fitted prediction (a gateway sees two tiers a sample).
    filled = np.where(np.isfinite(samples.scores), samples.scores, oof_quality)
    cost = models.cost(samples.features)
    weight = fit_cost_weight(oof_quality.astype(np.float32), cost, filled, cost.astype(np.float64), quality=target)
    observed = float(np.isfinite(samples.scores).mean())
    return weight, {
        "method": "cross-fitted predictions on the samples" + ("" if observed == 1 else ", unobserved tiers imputed"),
        "target_quality": target,
        "rows": n,
        "observed_share": round(observed, 4),
        "cost_weight": weight,
    }


def adapt(
    base: Artifact,
    tiers: Sequence[str],
    samples: JudgedSamples,
    *,
    target_quality: float = 0.95,
    method: str = "shrink",
    reference: str | None = None,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
    bank: Bank | None = None,
    models: Sequence[str | None] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Artifact:
    """A new artifact for ``tiers`` (cheapest first) with ``base`` as the prior; save it with
    ``save_artifact``. ``provenance`` (where the samples came from) goes into its meta.
    Method ``bank`` needs the base's ``bank`` and each tier's model name (``models``; None or a
    name the bank does not know starts that tier from the bank's average).

    ``reference`` names the tier a pairwise judge compares against: the other tiers' scores
    then mean "not beaten by it", and it is adequate by definition, so its estimator becomes
    the constant 1 (fitting it to all-ones would keep the base's per-prompt doubts about it)."""
    # Hundreds of small Newton solves: a threaded BLAS spends ~25x longer synchronising than
    # computing on these sizes, worse on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return _adapt(base, tiers, samples, target_quality, method, reference, seed, provenance, bank, models, progress)


def _adapt(
    base: Artifact,
    tiers: Sequence[str],
    samples: JudgedSamples,
    target_quality: float,
    method: str,
    reference: str | None,
    seed: int,
    provenance: dict[str, Any] | None,
    bank: Bank | None,
    model_names: Sequence[str | None] | None,
    progress: Callable[[str], None],
) -> Artifact:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    if method == "bank" and bank is None:
        raise ValueError("method 'bank' needs the base artifact's model bank")
    if method == "bank" and bank is not None and bank.w0.shape[0] != base.models.quality_w.shape[1]:
        raise ValueError("the model bank was fitted on other features than the base artifact's")
    names = list(model_names) if model_names is not None else [None] * len(tiers)
    if len(names) != len(tiers):
        raise ValueError(f"{len(names)} model names for tiers {list(tiers)}")
    if reference is not None and reference not in tiers:
        raise ValueError(f"reference tier {reference!r} is not one of {list(tiers)}")
    if samples.scores.shape[1] != len(tiers) or len(tiers) < 2:
        raise ValueError(f"scores have {samples.scores.shape[1]} columns for tiers {list(tiers)}")
    if samples.features.shape[1] != base.models.quality_w.shape[1]:
        raise ValueError(
            f"features have {samples.features.shape[1]} dims, the base artifact {base.models.quality_w.shape[1]}:"
            f" samples must be featurised with the base's encoder ({base.encoder})"
        )
    rng = np.random.default_rng(seed)
    n = len(samples.features)
    sample_w = np.ones(n) if samples.weights is None else samples.weights.astype(np.float64)
    cols = select_tiers(base.tiers, list(tiers))
    bm = base.models
    x = samples.features.astype(np.float64)
    qw = bm.quality_w[cols].astype(np.float64)
    qb = bm.quality_b[cols].astype(np.float64)
    oof = 1 / (1 + np.exp(-(x @ qw.T + qb)))  # tiers kept as the base predict as the base
    per_tier: dict[str, Any] = {}
    fold = rng.permutation(n) % FOLDS
    for i, tier in enumerate(tiers):
        seen = np.isfinite(samples.scores[:, i]) & (sample_w > 0)
        per_tier[tier] = {"base_estimator": base.tiers[cols[i]], "samples": int(seen.sum()), "source": "base"}
        if tier == reference:
            qw[i], qb[i] = 0.0, REFERENCE_LOGIT
            oof[:, i] = 1 / (1 + math.exp(-REFERENCE_LOGIT))
            per_tier[tier]["source"] = "reference (adequate by definition)"
            continue
        prior = None
        if method == "bank" and bank is not None:
            theta, b, source = _bank_prior(bank, names[i], base.meta.get("tier_models", {}).get(base.tiers[cols[i]]))
            prior = (bank, theta, b)
            qw[i], qb[i] = bank.estimator(theta, b)
            oof[:, i] = 1 / (1 + np.exp(-(x @ qw[i] + qb[i])))
            per_tier[tier].update(model=names[i], source=source)
            if not seen.any():
                continue
        elif seen.sum() < MIN_TIER_SAMPLES:
            progress(f"{tier}: {int(seen.sum())} samples, keeping the base estimator {base.tiers[cols[i]]}")
            continue
        progress(f"{tier}: fitting on {int(seen.sum())} samples ({method}, prior {per_tier[tier]['source']})")
        wn = sample_w / sample_w[seen].mean()
        base_w, base_b = qw[i].copy(), float(qb[i])
        qw[i], qb[i], fit = _tier_fit(method, x[seen], samples.scores[seen, i], wn[seen], base_w, base_b, prior)
        per_tier[tier].update(
            source=f"{per_tier[tier]['source']}, located" if prior else method,
            scale=round(fit.a, 4),
            correction_norm=round(float(np.linalg.norm(fit.v)), 4),
        )
        # Out-of-fold predictions, for an honest calibration of the cost weight.
        for k in range(FOLDS):
            tr, te = seen & (fold != k), fold == k
            fw, fb, _ = _tier_fit(method, x[tr], samples.scores[tr, i], wn[tr], base_w, base_b, prior)
            oof[te, i] = 1 / (1 + np.exp(-(x[te] @ fw + fb)))
    cw, cb, cost_report = _reprice(bm, cols, samples, sample_w)
    models = TierModels(list(tiers), qw.astype(np.float32), qb.astype(np.float32), cw, cb)
    fallback = float(base.meta.get("cost_weight", 0.35))
    cost_weight, calibration = _calibrate(models, oof, samples, target_quality, fallback)
    relative: dict[str, float | None]
    if samples.costs is not None:
        pred_cost = models.cost(samples.features).mean(axis=0)
        relative = {t: float(pred_cost[i] / pred_cost[-1]) for i, t in enumerate(tiers)}
    else:
        base_rel = base.meta.get("relative_call_cost") or {}
        relative = {t: base_rel.get(base.tiers[cols[i]]) for i, t in enumerate(tiers)}
    meta: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cost_weight": cost_weight,
        "calibration": calibration,
        "relative_call_cost": relative,
        "adapted_from": {
            "base_version": base.version,
            "base_tiers": base.tiers,
            "base_training_data": [d.get("file") for d in base.meta.get("training_data", [])],
            "method": method,
            "strength": _strength(method),
            "reference": reference,
            "seed": seed,
            "samples": n,
            "samples_per_tier": {t: per_tier[t]["samples"] for t in tiers},
            "weighted": samples.weights is not None,
            "quality": per_tier,
            "cost": cost_report,
            **(provenance or {}),
        },
        "estimator": {**base.meta.get("estimator", {}), "adapted": method},
    }
    if "licence_note" in base.meta:
        meta["licence_note"] = base.meta["licence_note"]
    return Artifact(
        models=models, encoder=base.encoder, max_chars=base.max_chars, meta=meta, length_scale=base.length_scale
    )


def stored_features(
    embeddings: npt.NDArray[np.floating[Any]], lengths: Sequence[int], encoder: str, base: Artifact
) -> F32:
    """Features of ledgered samples as ``Router.features`` builds them: the stored embedding
    (float16 is fine) of the prompt's tail, tagged with its encoder, plus the whole prompt's length."""
    if encoder != base.encoder:
        raise ValueError(f"samples were embedded with {encoder!r}, the base artifact uses {base.encoder!r}")
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[1] + 1 != base.models.quality_w.shape[1] or len(emb) != len(lengths):
        raise ValueError(f"embeddings {emb.shape} and {len(lengths)} lengths do not fit the base's features")
    out: F32 = np.hstack([emb, text_features(lengths, base.length_scale)]).astype(np.float32)
    return out


def observed_samples(
    features: F32, scores: F64, costs: F64 | None, observe: str, rng: np.random.Generator
) -> JudgedSamples:
    """Judged samples from fully measured rows (an outcome file), observed as a gateway would:

    * ``full``: every tier's recorded score (what the offline ``--samples`` mode uses);
    * ``partial``: one random cheaper tier and the top tier per row, their recorded scores;
    * ``pairwise``: the same pair, judged as a gateway's judge does: the cheaper tier scores 1
      if the top tier's answer is not better (ties count), the top tier is adequate by definition
      (adapt with ``reference`` = the top tier).
    """
    if observe not in OBSERVE:
        raise ValueError(f"unknown observation mode {observe!r}; known: {OBSERVE}")
    if observe == "full":
        return JudgedSamples(features, scores.copy(), None, None if costs is None else costs.copy())
    n, k = scores.shape
    cheaper = rng.integers(0, k - 1, n)
    seen = np.zeros((n, k), dtype=bool)
    seen[np.arange(n), cheaper] = True
    seen[:, -1] = True
    observed = np.where(seen, scores, np.nan)
    if observe == "pairwise":
        idx = np.arange(n)
        observed[idx, cheaper] = (scores[idx, cheaper] >= scores[:, -1] - 1e-12).astype(np.float64)
        observed[:, -1] = 1.0
    return JudgedSamples(features, observed, None, None if costs is None else np.where(seen, costs, np.nan))


def draw_samples(rows: int, n: int, seed: int) -> npt.NDArray[np.int_]:
    """The offline mode's judged samples: ``n`` of ``rows`` rows drawn at random with ``seed``."""
    if not 0 < n < rows:
        raise ValueError(f"--samples must be between 1 and {rows - 1} (the file has {rows} usable rows)")
    out: npt.NDArray[np.int_] = np.sort(np.random.default_rng(seed).permutation(rows)[:n])
    return out


def sample_ids(meta: dict[str, Any], path: Path) -> set[str]:
    """Ids of the rows of ``path`` an offline-adapted artifact drew as samples (empty if it was
    not adapted on this file), so an evaluation can judge it on the rest."""
    drawn = meta.get("adapted_from", {}).get("offline")
    if not drawn or drawn["sha256"] != hashlib.sha256(path.read_bytes()).hexdigest():
        return set()
    data = tier_matrix(read_rows([path]), drawn["tier_models"])
    return {data.rows[i].id for i in draw_samples(len(data.rows), drawn["samples"], drawn["seed"])}
