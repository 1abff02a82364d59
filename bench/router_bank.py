"""Adaptation with the model bank as the prior, against shrink and scratch (issue #27, item 3).

    python bench/router_bank.py [--ns 30,100,300] [--seeds 5] [--encoder static-minilm-l6-v2]

The split, built the way the issue measures it: half of RouterBench's prompts (train and dev
pooled, a fixed draw) is held out of everything trained here: the recipe's base artifact and
the model bank both see only the other half. A policy whose tiers are a line-up the base was
not trained as (local WizardLM-13B, mid Yi-34B, frontier GPT-4) adapts on N judged samples
drawn from the held-out half and is judged on the rest of it (cost at 95% / 97% of
always-frontier quality, dollars). Contenders:
  base            the base artifact unadapted, estimators mapped by rank
  scratch         ``router train``'s logistic objective from zero on the samples
  shrink          the base estimators plus a correction pulled to zero (the previous default)
  bank            the bank's abilities of the three named models, located from the samples
  bank, unknown   the same with the names withheld: each tier starts from the base's tier of its rank
  bank, no samples  the named models' abilities alone (N = 0)
Every contender re-prices the base cost model from the samples' observed costs and calibrates
its cost weight the same way (``router.adapt``). Writes bench/out/adapt_bank.json and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from router_adapt import judge, mapped, subset, summarise
from threadpoolctl import threadpool_limits

from router.adapt import JudgedSamples, adapt
from router.build_default import AUX_WEIGHT, HELD_OUT_MMLU, MMLU_WEIGHT, OPEN7B, TIERS, build_bank, offline_encoder
from router.cli import offline
from router.core import Router
from router.data import parse_tier_aliases, read_rows, tier_matrix
from router.estimators import TierModels
from router.train import DataSpec, train, without_rows

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "routing"
LINE_UP = {"local": "WizardLM/WizardLM-13B-V1.2", "mid": "zero-one-ai/Yi-34B-Chat", "frontier": "gpt-4-1106-preview"}
CONTENDERS = ("base", "scratch", "shrink", "bank", "bank, unknown", "bank, no samples")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ns", default="30,100,300")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--encoder", default="static-minilm-l6-v2")
    p.add_argument("--cache", default=str(REPO / ".cache" / "embeddings"))
    p.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = p.parse_args()
    offline()
    cache = Path(args.cache)
    encoder = offline_encoder(args.encoder, cache)
    rb_files = [DATA / "routerbench_train.jsonl", DATA / "routerbench_dev.jsonl"]
    pool = tier_matrix(read_rows(rb_files), LINE_UP)
    order = np.random.default_rng(0).permutation(len(pool.rows))
    held = np.sort(order[: len(order) // 2])
    held_ids = {pool.rows[i].id for i in held}
    log(f"RouterBench: {len(pool.rows)} prompts with the line-up; {len(held)} held out of the base and the bank")

    with tempfile.TemporaryDirectory(prefix="tierwise-bank-") as tmp:
        rb = without_rows(DataSpec(rb_files[0]), held_ids, Path(tmp) / "rb.jsonl")
        data = [rb, DataSpec(DATA / "mmlu_train.jsonl", MMLU_WEIGHT), *(DataSpec(DATA / f, AUX_WEIGHT) for f in OPEN7B)]
        base = train(
            data,
            parse_tier_aliases(TIERS),
            Path(tmp) / "base",
            encoder,
            exclude_sources=HELD_OUT_MMLU,
            cache_dir=cache,
            progress=log,
        )
    bank = build_bank(DATA, encoder, base.max_chars, cache, exclude_ids=held_ids)
    router = Router(base, encoder, cache_size=0)
    test_all = subset(pool, held)
    feats = router.features([r.prompt for r in test_all.rows])
    tiers, names = list(LINE_UP), list(LINE_UP.values())
    base_w = float(base.meta["cost_weight"])
    draws: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for n in [int(x) for x in args.ns.split(",")]:
        for seed in range(args.seeds):
            idx = np.random.default_rng(seed).permutation(len(held))
            samp, rest = np.sort(idx[:n]), np.sort(idx[n:])
            samples = JudgedSamples(feats[samp], test_all.scores[samp].copy(), None, test_all.costs[samp].copy())
            test, tfeat = subset(test_all, rest), feats[rest]
            fitted: dict[str, tuple[TierModels, float | None]] = {"base": (mapped(base, tiers), base_w)}
            for name, method, models in (
                ("scratch", "scratch", None),
                ("shrink", "shrink", None),
                ("bank", "bank", names),
                ("bank, unknown", "bank", None),
            ):
                a = adapt(base, tiers, samples, method=method, seed=seed, bank=bank, models=models)
                fitted[name] = (a.models, float(a.meta["cost_weight"]))
            none = JudgedSamples(feats[samp][:0], test_all.scores[samp][:0], None, None)
            a = adapt(base, tiers, none, method="bank", seed=seed, bank=bank, models=names)
            fitted["bank, no samples"] = (
                TierModels(tiers, a.models.quality_w, a.models.quality_b, *_costs(fitted["shrink"][0])),
                fitted["shrink"][1],
            )
            for name, (models, weight) in fitted.items():
                draws.setdefault(str(n), {}).setdefault(name, []).append(judge(models, weight, test, tfeat))
            log(
                f"N={n} seed={seed}: cost@95 "
                + ", ".join(f"{k} {_pct(v[-1]['cost_at_95'])}" for k, v in draws[str(n)].items())
            )
    keys = ("cost_at_95", "cost_at_97", "aiq", "calibrated_quality", "calibrated_cost")
    summary = {
        n: {c: {k: summarise([d.get(k) for d in per[c]]) for k in keys} for c in per} for n, per in draws.items()
    }
    result = {
        "line_up": LINE_UP,
        "encoder": encoder.name,
        "held_out_prompts": len(held),
        "bank": {"models": len(bank.models), "dimensions": int(bank.a.shape[0])},
        "seeds": args.seeds,
        "summary": summary,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapt_bank.json").write_text(json.dumps(result, indent=1) + "\n")
    _print(result)
    _plot(result, out / "adapt_bank.png")
    log(f"wrote {out / 'adapt_bank.json'} and {out / 'adapt_bank.png'}")
    return 0


def _costs(models: TierModels) -> tuple[Any, Any]:
    return models.cost_w, models.cost_b


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _print(result: dict[str, Any]) -> None:
    print(f"cost at 95% / 97% of always-frontier quality, % of always-frontier; mean ± sd over {result['seeds']} draws")
    print(f"{'N':>5}  {'contender':<18}{'cost@95%':>16}{'cost@97%':>16}")
    for n, per in result["summary"].items():
        for c, s in per.items():
            cells = [
                "-" if s[k]["mean"] is None else f"{s[k]['mean'] * 100:5.1f} ± {s[k]['sd'] * 100:4.1f}"
                for k in ("cost_at_95", "cost_at_97")
            ]
            print(f"{n:>5}  {c:<18}{cells[0]:>16}{cells[1]:>16}")


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=120)
    ns = [int(n) for n in result["summary"]]
    for j, c in enumerate(CONTENDERS):
        means = np.array([result["summary"][str(n)][c]["cost_at_95"]["mean"] or np.nan for n in ns]) * 100
        sds = np.array([result["summary"][str(n)][c]["cost_at_95"]["sd"] or 0.0 for n in ns]) * 100
        xs = np.array(ns) * (1 + 0.04 * (j - len(CONTENDERS) / 2))
        ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=c, ls="--" if "no samples" in c else "-")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("judged samples N (from the held-out half)")
    ax.set_ylabel("cost at 95% of frontier quality, % of always-frontier")
    ax.set_title(
        f"Adapting to {' < '.join(result['line_up'].values())}\n(rest of the held-out half; mean ± sd)", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):
        raise SystemExit(main())
