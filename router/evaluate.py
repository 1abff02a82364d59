"""Offline evaluation: the router and baselines on any outcome file, one table, JSON and a PNG.

Routers compared (each a set of operating points on the cost-quality plane):
  tierwise         the artifact, swept over its cost weight
  random           random mixes of the fixed tiers (the hull of the always-X points)
  always-<tier>    one tier for everything (always-cheapest, always-frontier, ...)
  length           prompt-length heuristic: longer prompts to higher tiers, swept over thresholds
  knn              k-nearest-neighbour outcomes (k=25, cosine), 5-fold cross-fitted on this file
  oracle           the cheapest tier that gets each prompt right
  tierwise+cascade (when given which recorded answers a checker rejects) the router's choice,
                   escalated a tier up, paying both calls, when its answer is rejected
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.calibrate import candidate_weights, sweep
from router.cascade import cascade
from router.core import choose_two_stage, two_stage_preference
from router.data import OutcomeSet, prompt_for_routing
from router.estimators import F32
from router.metrics import aiq, apgr_cpt, cost_at_quality, operating_point
from router.tiermap import estimators_for

__all__ = ["EvalResult", "RouterCurve", "evaluate", "print_table", "write_json", "write_png"]

Array = npt.NDArray[np.float64]


@dataclass
class RouterCurve:
    name: str
    points: list[tuple[float, float]]  # (cost as fraction of always-frontier, quality)
    strong_pref: Array | None = None  # for two-tier APGR/CPT
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass
class EvalResult:
    n: int
    skipped: int
    tiers: list[str]
    cost_unit: str
    frontier_quality: float
    routers: list[RouterCurve]


def _fixed_points(data: OutcomeSet, ref: float) -> list[tuple[float, float]]:
    n = len(data.rows)
    return [
        ((c := operating_point(np.full(n, t), data.scores, data.costs))[0] / ref, c[1]) for t in range(len(data.tiers))
    ]


def _length_curve(data: OutcomeSet, ref: float) -> list[tuple[float, float]]:
    lengths = np.array([len(prompt_for_routing(r.prompt, 10**9)) for r in data.rows], dtype=float)
    d = np.argsort(np.argsort(lengths)) / max(1, len(lengths) - 1)  # rank in 0..1
    k = len(data.tiers)
    pts = []
    grid = np.linspace(0, 1, 21)
    for lo in grid:
        for hi in grid[grid >= lo]:
            # below lo: cheapest; above hi: top; between: middle tiers spread evenly
            mid = np.clip(1 + ((d - lo) / max(hi - lo, 1e-9) * max(k - 2, 0)).astype(int), 1, max(1, k - 2))
            ch = np.where(d < lo, 0, np.where(d >= hi, k - 1, mid if k > 2 else k - 1))
            c, q = operating_point(ch, data.scores, data.costs)
            pts.append((c / ref, q))
    return pts


def _knn_predictions(features: F32, data: OutcomeSet, k: int = 25, folds: int = 5) -> tuple[Array, Array]:
    """Cross-fitted kNN estimates of each tier's score and cost (no row sees itself)."""
    n = len(features)
    rng = np.random.default_rng(0)
    fold = rng.integers(0, folds, n)
    emb = features[:, :-1]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)
    q_hat = np.zeros_like(data.scores)
    c_hat = np.zeros_like(data.costs)
    for f in range(folds):
        test, train = fold == f, fold != f
        if not test.any() or train.sum() < 2:
            continue
        sims = emb[test] @ emb[train].T
        kk = min(k, int(train.sum()))
        nn = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        q_hat[test] = data.scores[train][nn].mean(axis=1)
        c_hat[test] = data.costs[train][nn].mean(axis=1)
    return q_hat, c_hat


def _curve_from_predictions(
    quality: F32 | Array, cost: F32 | Array, data: OutcomeSet, ref: float
) -> list[tuple[float, float]]:
    pts = []
    for p in sweep(np.asarray(quality, np.float32), np.asarray(cost, np.float32)):
        c, q = operating_point(p.choice, data.scores, data.costs)
        pts.append((c / ref, q))
    return pts


def _two_stage_curve(
    first: tuple[F32, F32], second: tuple[F32, F32], margin: float, data: OutcomeSet, ref: float
) -> list[tuple[float, float]]:
    """The two-stage router's decisions at every weight where either stage's choice changes."""
    weights = np.unique(np.concatenate([candidate_weights(*first), candidate_weights(*second)]))
    pts = []
    for w in weights:
        c, q = operating_point(choose_two_stage(first, second, float(w), margin), data.scores, data.costs)
        pts.append((c / ref, q))
    return pts


def _cascade_curve(
    quality: F32 | Array, cost: F32 | Array, data: OutcomeSet, ref: float, failed: npt.NDArray[np.bool_], steps: int
) -> list[tuple[float, float]]:
    """The router's sweep, each choice followed by the cascade: same weights as ``tierwise``."""
    idx = np.arange(len(data.rows))
    pts = []
    for p in sweep(np.asarray(quality, np.float32), np.asarray(cost, np.float32)):
        served, paid = cascade(p.choice, failed, data.costs, steps)
        pts.append((float(paid.sum()) / ref, float(data.scores[idx, served].mean())))
    return pts


def _pref(quality: F32 | Array, cost: F32 | Array) -> Array:
    """Two tiers: the gain in quality per unit of extra cost from going strong."""
    gain = np.asarray(quality[:, -1] - quality[:, 0], np.float64)
    extra = np.maximum(np.asarray(cost[:, -1] - cost[:, 0], np.float64), 1e-9)
    out: Array = gain / extra
    return out


def evaluate(
    data: OutcomeSet,
    features: F32,
    router_quality: F32,
    router_cost: F32,
    *,
    failed: npt.NDArray[np.bool_] | None = None,
    max_steps: int = 1,
    progress: Callable[[str], None] = lambda _: None,
    first_stage: tuple[F32, F32] | None = None,
    margin: float = 0.0,
) -> EvalResult:
    """``failed`` (rows x tiers, from ``router.cascade.check_failures``) adds the cascade curve.
    ``first_stage`` (its quality and cost predictions) with its ``margin``: the router is
    two-stage, and its curve is what it serves (the first stage where it is sure, the second
    stage elsewhere), not the second stage's predictions alone."""
    n = len(data.rows)
    idx = np.arange(n)
    ref = float(data.costs[:, -1].sum()) or 1.0
    frontier_q = float(data.scores[:, -1].mean())
    fixed = _fixed_points(data, ref)
    curves: list[RouterCurve] = []

    progress("sweeping the tierwise router")
    pref: Array | None
    if first_stage is None:
        tierwise = _curve_from_predictions(router_quality, router_cost, data, ref)
        pref = _pref(router_quality, router_cost)
    else:
        second = (router_quality, router_cost)
        tierwise = _two_stage_curve(first_stage, second, margin, data, ref)
        pref = two_stage_preference(first_stage, second, margin) if len(data.tiers) == 2 else None
    curves.append(RouterCurve("tierwise", tierwise, pref))
    if failed is not None:
        progress(f"replaying the cascade (at most {max_steps} escalation(s))")
        points = _cascade_curve(router_quality, router_cost, data, ref, failed, max_steps)
        curves.append(RouterCurve("tierwise+cascade", points))
    curves.append(RouterCurve("random", fixed, np.random.default_rng(0).random(n)))
    for t, name in enumerate(data.tiers):
        curves.append(RouterCurve(f"always-{name}", [fixed[t]]))
    progress("prompt-length heuristic")
    lengths = np.array([len(prompt_for_routing(r.prompt, 10**9)) for r in data.rows], dtype=float)
    curves.append(RouterCurve("length", _length_curve(data, ref), lengths))
    progress("kNN baseline (5-fold)")
    kq, kc = _knn_predictions(features, data)
    curves.append(RouterCurve("knn", _curve_from_predictions(kq, kc, data, ref), _pref(kq, kc)))
    best = data.scores.max(axis=1, keepdims=True)
    oracle_choice = np.argmax(data.scores >= best - 1e-12, axis=1)  # cheapest tier reaching the best score
    c, q = operating_point(oracle_choice, data.scores, data.costs)
    curves.append(
        RouterCurve(
            "oracle", [(c / ref, q)], (data.scores[:, -1] - data.scores[:, 0]) if len(data.tiers) == 2 else None
        )
    )

    two = len(data.tiers) == 2
    for curve in curves:
        m: dict[str, float | None] = {
            "cost_at_95": cost_at_quality(curve.points, 0.95 * frontier_q),
            "cost_at_97": cost_at_quality(curve.points, 0.97 * frontier_q),
            "aiq": aiq(curve.points, 1.0),
            "apgr": None,
            "cpt50": None,
            "cpt80": None,
        }
        if two and curve.strong_pref is not None:
            apgr, (c50, c80) = apgr_cpt(curve.strong_pref, data.scores[idx, 0], data.scores[idx, 1])
            m.update(apgr=None if math.isnan(apgr) else apgr, cpt50=c50, cpt80=c80)
        curve.metrics = m
    return EvalResult(
        n=n,
        skipped=data.skipped,
        tiers=data.tiers,
        cost_unit="calls to the top tier" if data.cost_in_calls else "USD",
        frontier_quality=frontier_q,
        routers=curves,
    )


def _fmt(v: float | None) -> str:
    return "   -  " if v is None else f"{v * 100:6.1f}%"


def print_table(result: EvalResult, out: Callable[[str], Any] = print) -> None:
    out(
        f"rows: {result.n} (skipped {result.skipped} lacking a named model); "
        f"tiers: {', '.join(result.tiers)}; cost in {result.cost_unit}"
    )
    out(f"always-frontier quality: {result.frontier_quality:.4f}; cost columns are % of always-frontier cost")
    out(f"{'router':<18}{'cost@95%':>10}{'cost@97%':>10}{'AIQ':>9}{'APGR':>9}{'CPT50':>9}{'CPT80':>9}")
    for r in result.routers:
        m = r.metrics
        aiq_s = f"{m['aiq']:.4f}" if m.get("aiq") is not None else "-"
        out(
            f"{r.name:<18}{_fmt(m['cost_at_95']):>10}{_fmt(m['cost_at_97']):>10}{aiq_s:>9}{_fmt(m['apgr']):>9}{_fmt(m['cpt50']):>9}{_fmt(m['cpt80']):>9}"
        )


def write_json(result: EvalResult, path: Path) -> None:
    payload = {
        "n": result.n,
        "skipped": result.skipped,
        "tiers": result.tiers,
        "cost_unit": result.cost_unit,
        "routers": {
            r.name: {k: r.metrics.get(k) for k in ("apgr", "cpt50", "cpt80", "cost_at_95", "cost_at_97", "aiq")}
            for r in result.routers
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_png(result: EvalResult, path: Path, title: str = "") -> None:
    import matplotlib  # noqa: PLC0415 - plotting only when asked

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from router.metrics import hull  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    styles: dict[str, dict[str, Any]] = {
        "tierwise": {"color": "#d62728", "lw": 2.5, "zorder": 5},
        "tierwise+cascade": {"color": "#ff7f0e", "lw": 1.8, "ls": "-.", "zorder": 6},
        "knn": {"color": "#1f77b4", "lw": 1.5},
        "length": {"color": "#9467bd", "lw": 1.5, "ls": "--"},
        "random": {"color": "#7f7f7f", "lw": 1.2, "ls": ":"},
    }
    for r in result.routers:
        h = hull(r.points)
        if len(h) > 1 and r.name in styles:
            xs, ys = zip(*h, strict=True)
            ax.plot(np.array(xs) * 100, ys, label=f"{r.name} (AIQ {r.metrics['aiq']:.3f})", **styles[r.name])
            if r.name == "tierwise":
                px = [c * 100 for c, _ in r.points]
                py = [q for _, q in r.points]
                ax.scatter(px, py, s=6, color="#d62728", alpha=0.25)
        elif len(r.points) == 1:
            c, q = r.points[0]
            marker = "*" if r.name == "oracle" else "o"
            ax.scatter([c * 100], [q], marker=marker, s=90 if marker == "*" else 45, zorder=6, label=r.name)
    fq = result.frontier_quality
    for frac, ls in ((0.95, "--"), (0.97, "-.")):
        ax.axhline(frac * fq, color="#2ca02c", lw=0.8, ls=ls, alpha=0.7)
        ax.text(101, frac * fq, f"{frac:.0%} of frontier", va="center", fontsize=7, color="#2ca02c")
    ax.set_xlabel(f"cost, % of always-{result.tiers[-1]} ({result.cost_unit})")
    ax.set_ylabel("quality (mean score)")
    ax.set_xlim(-2, 112)
    ax.set_title(title or f"Cost-quality curve, {result.n} prompts, tiers {' < '.join(result.tiers)}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def select_tiers(router_tiers: Sequence[str], named: Sequence[str]) -> list[int]:
    """The artifact's estimator columns for the named tiers (``router.tiermap``'s rule)."""
    chosen = estimators_for(named, router_tiers)
    return [list(router_tiers).index(chosen[t]) for t in named]
