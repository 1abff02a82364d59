"""Router adaptation from judged samples, measured on public data (issue #14, "Learn from it").

    python bench/router_adapt.py [--base default] [--ns 100,300,1000] [--seeds 5] [--quick]

RouterBench: a model triple the base artifact was not trained as; N random rows of
routerbench_train are the judged samples, the rest of it (and, separately, routerbench_dev,
which the base never saw) is the test set. Contenders, judged as ``tierwise router eval``:
  (a) base         the base artifact unadapted, estimators mapped by rank
  (a) base+price   the same quality estimators with the cost model re-priced from the samples
  (b) scratch      logistic regression (C=0.3) from zero on the N rows, the same re-priced cost model
  (b) scratch-full ``router train``'s recipe on the N rows (its own ridge cost model too)
  (c) shrink/stack/warm   adapted (router/adapt.py), full rows
  (c) <m>-partial / <m>-pairwise  adapted from rows that reveal one cheaper tier and the top
                                  (absolute scores / the gateway judge's not-beaten verdict)
Arena-Hard: mid=gpt-3.5-turbo-0125, frontier=gpt-4-0314, 5-fold CV over whole clusters
(``source``), repeated over seeds; cost in calls (APGR, CPT).
Writes bench/out/adapt_routerbench.json, adapt_arena.json and adapt_cost95.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from router.adapt import JudgedSamples, adapt, observed_samples
from router.artifact import Artifact, resolve_artifact
from router.cli import offline
from router.core import Router
from router.data import OutcomeSet, read_rows, tier_matrix
from router.estimators import F32, TierModels, TrainingSet, fit_tier_models
from router.evaluate import evaluate, select_tiers
from router.metrics import operating_point

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "routing"
RB_TIERS = {
    "local": "WizardLM/WizardLM-13B-V1.2",
    "mid": "zero-one-ai/Yi-34B-Chat",
    "frontier": "gpt-4-1106-preview",
}
ARENA_TIERS = {"mid": "gpt-3.5-turbo-0125", "frontier": "gpt-4-0314"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def subset(data: OutcomeSet, idx: np.ndarray) -> OutcomeSet:
    return OutcomeSet(
        rows=[data.rows[i] for i in idx],
        tiers=data.tiers,
        scores=data.scores[idx],
        costs=data.costs[idx],
        cost_in_calls=data.cost_in_calls,
        sources=[data.sources[i] for i in idx],
    )


def judge(models: TierModels, cost_weight: float | None, data: OutcomeSet, feats: F32) -> dict[str, Any]:
    """The `router eval` metrics of the tierwise curve, plus where the calibrated weight lands."""
    q, c = models.quality(feats), models.cost(feats)
    result = evaluate(data, feats, q, c)
    m = dict(next(r for r in result.routers if r.name == "tierwise").metrics)
    if cost_weight is not None:
        from router.core import choose

        cost, quality = operating_point(choose(q, c, cost_weight), data.scores, data.costs)
        m["calibrated_quality"] = quality / result.frontier_quality
        m["calibrated_cost"] = cost / float(data.costs[:, -1].sum())
    return m


def mapped(base: Artifact, tiers: list[str]) -> TierModels:
    cols = select_tiers(base.tiers, tiers)
    b = base.models
    return TierModels(tiers, b.quality_w[cols], b.quality_b[cols], b.cost_w[cols], b.cost_b[cols])


def scratch_full(feats: F32, scores: np.ndarray, costs: np.ndarray, tiers: list[str]) -> TierModels:
    sets = [TrainingSet(feats, scores[:, i], np.ones(len(feats)), costs[:, i]) for i in range(len(tiers))]
    return fit_tier_models(tiers, sets)


def summarise(values: list[float | None]) -> dict[str, float | None]:
    ok = [v for v in values if v is not None]
    if not ok:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(np.mean(ok)),
        "sd": float(np.std(ok, ddof=1)) if len(ok) > 1 else 0.0,
        "min": float(min(ok)),
        "max": float(max(ok)),
        "n": len(ok),
        "missing": len(values) - len(ok),
    }


def routerbench(base: Artifact, router: Router, ns: list[int], seeds: int, methods: list[str]) -> dict[str, Any]:
    tiers = list(RB_TIERS)
    train = tier_matrix(read_rows([DATA / "routerbench_train.jsonl"]), RB_TIERS)
    dev = tier_matrix(read_rows([DATA / "routerbench_dev.jsonl"]), RB_TIERS)
    log(f"routerbench: {len(train.rows)} train rows, {len(dev.rows)} dev rows; featurising with {base.encoder}")
    f_train = router.features([r.prompt for r in train.rows])
    f_dev = router.features([r.prompt for r in dev.rows])
    base_models = mapped(base, tiers)
    base_w = float(base.meta.get("cost_weight", 0.35))
    results: dict[str, dict[str, dict[str, list[Any]]]] = {}  # n -> contender -> testset -> metrics per draw
    for n in ns:
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            idx = rng.permutation(len(train.rows))
            samp, rest = np.sort(idx[:n]), np.sort(idx[n:])
            tests = {"rest": (subset(train, rest), f_train[rest]), "dev": (dev, f_dev)}
            fs, sc, co = f_train[samp], train.scores[samp], train.costs[samp]
            full = JudgedSamples(fs, sc.copy(), None, co.copy())
            arts: dict[str, tuple[TierModels, float | None]] = {"base": (base_models, base_w)}
            t0 = time.time()
            for m in [*methods, "scratch"]:
                a = adapt(base, tiers, full, method=m, seed=seed)
                arts[m] = (a.models, float(a.meta["cost_weight"]))
            shrink_cost = arts[methods[0]][0]
            arts["base+price"] = (
                TierModels(tiers, base_models.quality_w, base_models.quality_b, shrink_cost.cost_w, shrink_cost.cost_b),
                None,
            )
            arts["scratch-full"] = (scratch_full(fs, sc, co, tiers), None)
            for mode in ("partial", "pairwise"):
                obs = observed_samples(fs, sc, co, mode, np.random.default_rng(1000 + seed))
                ref = tiers[-1] if mode == "pairwise" else None
                a = adapt(base, tiers, obs, method=methods[0], reference=ref, seed=seed)
                arts[f"{methods[0]}-{mode}"] = (a.models, float(a.meta["cost_weight"]))
            fit_s = time.time() - t0
            for name, (models, w) in arts.items():
                for tname, (tdata, tfeat) in tests.items():
                    m = judge(models, w, tdata, tfeat)
                    results.setdefault(str(n), {}).setdefault(name, {}).setdefault(tname, []).append(m)
            r = results[str(n)]
            log(
                f"N={n} seed={seed} ({fit_s:.0f}s to fit): cost@95 rest "
                + ", ".join(f"{k} {v['rest'][-1]['cost_at_95']}" for k, v in r.items())
            )
    summary: dict[str, Any] = {}
    for n, per in results.items():
        for name, per_test in per.items():
            for tname, draws in per_test.items():
                keys = ("cost_at_95", "cost_at_97", "aiq", "calibrated_quality", "calibrated_cost")
                summary.setdefault(n, {}).setdefault(name, {})[tname] = {
                    k: summarise([d.get(k) for d in draws]) for k in keys
                }
    return {"tiers": RB_TIERS, "base": base.version, "seeds": seeds, "summary": summary, "draws": results}


def arena(base: Artifact, router: Router, seeds: int, methods: list[str], folds: int = 5) -> dict[str, Any]:
    tiers = list(ARENA_TIERS)
    data = tier_matrix(read_rows([DATA / "arena_hard_train.jsonl"]), ARENA_TIERS)
    usd = data.costs.copy()
    # Judged in calls to the top tier (RouteLLM's convention for APGR/CPT); the samples keep USD.
    calls = OutcomeSet(data.rows, data.tiers, data.scores, np.tile([0.0, 1.0], (len(data.rows), 1)), True)
    calls.sources = data.sources
    feats = router.features([r.prompt for r in data.rows])
    sources = sorted(set(data.sources))
    log(f"arena: {len(data.rows)} rows, {len(sources)} clusters, {folds}-fold CV by cluster x {seeds} seeds")
    base_models = mapped(base, tiers)
    contenders = ["base", *methods, "scratch"]
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(sources))
        fold_of = {sources[j]: i % folds for i, j in enumerate(order)}
        fold = np.array([fold_of[s] for s in data.sources])
        preds = {
            c: (np.zeros_like(data.scores, np.float32), np.zeros_like(data.scores, np.float32)) for c in contenders
        }
        for k in range(folds):
            tr, te = fold != k, fold == k
            samples = JudgedSamples(feats[tr], data.scores[tr].copy(), None, usd[tr].copy())
            models = {"base": base_models}
            for m in [*methods, "scratch"]:
                # gpt-4-0314 is the judge's reference: adequate by definition
                models[m] = adapt(base, tiers, samples, method=m, reference=tiers[-1], seed=seed).models
            for c in contenders:
                preds[c][0][te] = models[c].quality(feats[te])
                preds[c][1][te] = models[c].cost(feats[te])
        for c in contenders:
            res = evaluate(calls, feats, preds[c][0], preds[c][1])
            out[c].append(dict(next(r for r in res.routers if r.name == "tierwise").metrics))
        log(f"arena seed {seed}: APGR " + ", ".join(f"{c} {out[c][-1]['apgr']:.3f}" for c in contenders))
    keys = ("apgr", "cpt50", "cpt80", "cost_at_95", "aiq")
    summary = {c: {k: summarise([d.get(k) for d in draws]) for k in keys} for c, draws in out.items()}
    return {
        "tiers": ARENA_TIERS,
        "base": base.version,
        "seeds": seeds,
        "folds": folds,
        "summary": summary,
        "draws": out,
    }


def pct(s: dict[str, float | None]) -> str:
    if s.get("mean") is None:
        return "      -      "
    miss = f" ({s['missing']} n/a)" if s.get("missing") else ""
    return f"{s['mean'] * 100:5.1f} ± {s['sd'] * 100:4.1f}{miss}"


def print_routerbench(res: dict[str, Any]) -> None:
    for tname, label in (("rest", "rest of routerbench_train"), ("dev", "routerbench_dev (unseen by the base)")):
        print(f"\nRouterBench, {label}; tiers {res['tiers']}; mean ± sd over {res['seeds']} draws")
        print(f"{'N':>5} {'contender':<18}{'cost@95%':>16}{'cost@97%':>16}{'AIQ':>16}{'calib. q/cost':>20}")
        for n, per in res["summary"].items():
            for name, per_test in per.items():
                s = per_test[tname]
                aiq = f"{s['aiq']['mean']:.4f} ± {s['aiq']['sd']:.4f}"
                cal = (
                    f"{s['calibrated_quality']['mean'] * 100:5.1f}% / {s['calibrated_cost']['mean'] * 100:4.1f}%"
                    if s["calibrated_quality"]["mean"] is not None
                    else "-"
                )
                print(f"{n:>5} {name:<18}{pct(s['cost_at_95']):>16}{pct(s['cost_at_97']):>16}{aiq:>16}{cal:>20}")


def print_arena(res: dict[str, Any]) -> None:
    print(f"\nArena-Hard, {res['folds']}-fold CV by cluster, {res['seeds']} seeds; tiers {res['tiers']}; cost in calls")
    print(f"{'contender':<12}{'APGR':>16}{'CPT50':>16}{'CPT80':>16}{'cost@95%':>16}")
    for c, s in res["summary"].items():
        print(f"{c:<12}{pct(s['apgr']):>16}{pct(s['cpt50']):>16}{pct(s['cpt80']):>16}{pct(s['cost_at_95']):>16}")


def plot(res: dict[str, Any], path: Path, contenders: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120, sharey=True)
    ns = [int(n) for n in res["summary"]]
    for ax, (tname, title) in zip(
        axes, (("rest", "rest of routerbench_train"), ("dev", "routerbench_dev (unseen by the base)")), strict=True
    ):
        for j, c in enumerate(contenders):
            means = [res["summary"][str(n)][c][tname]["cost_at_95"]["mean"] for n in ns]
            sds = [res["summary"][str(n)][c][tname]["cost_at_95"]["sd"] for n in ns]
            xs = np.array(ns) * (1 + 0.03 * (j - len(contenders) / 2))
            label = {"base": "(a) base, unadapted", "scratch": "(b) scratch"}.get(c, f"(c) {c}")
            ax.errorbar(xs, np.array(means) * 100, yerr=np.array(sds) * 100, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("judged samples N")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cost at 95% of frontier quality, % of always-frontier")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Adapting {res['base']} to {' < '.join(res['tiers'].values())} (mean ± sd over draws)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="default", help="base artifact (shipped name or directory)")
    p.add_argument("--ns", default="100,300,1000")
    p.add_argument("--seeds", type=int, default=5, help="draws per N (and CV repeats on Arena-Hard)")
    p.add_argument("--methods", default="shrink,stack,warm", help="adaptation methods; the first is the headline")
    p.add_argument("--skip-arena", action="store_true")
    p.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = p.parse_args()
    offline()
    base_path = resolve_artifact(args.base)
    router = Router.load(base_path)
    base = router.artifact
    methods = args.methods.split(",")
    out = Path(args.out)
    rb = routerbench(base, router, [int(n) for n in args.ns.split(",")], args.seeds, methods)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapt_routerbench.json").write_text(json.dumps(rb, indent=1) + "\n")
    print_routerbench(rb)
    plot(rb, out / "adapt_cost95.png", ["base", "scratch", methods[0], f"{methods[0]}-pairwise"])
    if not args.skip_arena:
        ar = arena(base, router, args.seeds, methods)
        (out / "adapt_arena.json").write_text(json.dumps(ar, indent=1) + "\n")
        print_arena(ar)
    log(f"wrote {out}/adapt_routerbench.json, adapt_arena.json, adapt_cost95.png")
    return 0


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: BLAS threads only contend
        raise SystemExit(main())
