"""Does token-logprob confidence from the local SmolLM2 tier mean anything? (issue #15)

Starts the local model server, asks every item of the labelled set (bench/confidence_set.py)
at temperature 0 with ``logprobs: true, top_logprobs: 5``, checks each answer mechanically,
and reports how well each candidate confidence statistic separates right answers from wrong
ones (ROC AUC, overall and per category) and what escalating below a threshold would cost and buy.

python bench/confidence.py [--limit N] [--reuse]   # --reuse re-scores bench/out/confidence_raw.jsonl
Writes bench/out/confidence.json, bench/out/confidence.png and bench/out/confidence_raw.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's gateway and bench

from bench.confidence_set import Item, labelled_set
from gateway.local_model import LocalModelConfig, LocalModelSupervisor, bundled_gguf
from gateway.quality.confidence import token_logprobs

OUT = Path("bench/out")
TOP_LOGPROBS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body(item: Item, logprobs: bool = True, stream: bool = False) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": "x",
        "messages": [{"role": "user", "content": item.prompt}],
        "temperature": 0,
        "max_tokens": item.max_tokens,
        "stream": stream,
    }
    if logprobs:  # llama-cpp-python returns no logprobs unless top_logprobs is set
        b |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
    if item.json_mode:
        b["response_format"] = {"type": "json_object"}
    return b


def ask_all(http: httpx.Client, url: str, items: Sequence[Item]) -> list[dict[str, Any]]:
    rows, started = [], time.monotonic()
    for n, item in enumerate(items, 1):
        t0 = time.perf_counter()
        r = http.post(url, json=body(item))
        r.raise_for_status()
        choice = r.json()["choices"][0]
        answer = choice["message"]["content"] or ""
        rows.append(
            {
                "id": item.id,
                "category": item.category,
                "level": item.level,
                "answer": answer,
                "finish_reason": choice["finish_reason"],
                "seconds": round(time.perf_counter() - t0, 3),
                "logprobs": (choice.get("logprobs") or {}).get("content"),
            }
        )
        if n % 10 == 0 or n == len(items):
            done = time.monotonic() - started
            right = sum(it.check(row["answer"]) for it, row in zip(items, rows, strict=False))
            print(
                f"  {n}/{len(items)} asked, {right / n:.0%} right so far, "
                f"{done:.0f}s elapsed, ~{done / n * (len(items) - n):.0f}s left",
                flush=True,
            )
    return rows


def logprob_overhead(http: httpx.Client, url: str, items: Sequence[Item], rounds: int) -> dict[str, Any]:
    """Latency of the same requests without and with logprobs, interleaved (same tokens: greedy)."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for item in items:
            for lp in (False, True):
                t0 = time.perf_counter()
                http.post(url, json=body(item, logprobs=lp)).raise_for_status()
                times[lp].append(time.perf_counter() - t0)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {"requests_each": len(times[False]), "median_s_without": off, "median_s_with": on, "ratio": on / off}


def stream_matches(http: httpx.Client, url: str, item: Item, expected: Sequence[float]) -> dict[str, Any]:
    """Stream the item with logprobs; do the chunks carry the same per-token logprobs as the plain reply?"""
    from gateway.quality.confidence import StreamConfidence

    acc, chunks_with = StreamConfidence(), 0
    got: list[float] = []
    with http.stream("POST", url, json=body(item, stream=True)) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            acc.feed(chunk)
            content = ((chunk["choices"][0] if chunk["choices"] else {}).get("logprobs") or {}).get("content")
            if content:
                chunks_with += 1
                got.extend(token_logprobs(content))
    # Values differ slightly between calls: llama.cpp reuses the cached prompt prefix, and a
    # different evaluation batch gives slightly different logits.
    diff = max((abs(a - b) for a, b in zip(got, expected, strict=False)), default=0.0)
    stream_conf = acc.confidence()
    return {
        "id": item.id,
        "tokens_plain": len(expected),
        "tokens_stream": len(got),
        "chunks_with_logprobs": chunks_with,
        "max_abs_diff": round(diff, 4),
        "stream_mean": round(stream_conf.mean_logprob, 4) if stream_conf else None,
        "plain_mean": round(float(np.mean(expected)), 4) if expected else None,
    }


# ---- candidate statistics (higher = more confident) -------------------------------------------------


def _margins(content: Sequence[dict[str, Any]]) -> list[float]:
    out = []
    for entry in content:
        tops = sorted((t["logprob"] for t in entry.get("top_logprobs") or []), reverse=True)
        if len(tops) >= 2:
            out.append(tops[0] - tops[1])
    return out


STATS: dict[str, Callable[[list[float], list[dict[str, Any]]], float]] = {
    "mean": lambda v, c: float(np.mean(v)),
    "min": lambda v, c: min(v),
    "lowest3_mean": lambda v, c: float(np.mean(sorted(v)[:3])),
    "first8_mean": lambda v, c: float(np.mean(v[:8])),
    "sum": lambda v, c: float(np.sum(v)),
    "margin_mean": lambda v, c: float(np.mean(_margins(c) or [0.0])),
    "margin_min": lambda v, c: min(_margins(c) or [0.0]),
    "neg_tokens (baseline)": lambda v, c: -float(len(v)),
}


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, s)), 3) if 0 < y.sum() < len(y) else None


def auc_ci(y: np.ndarray, s: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng, vals = np.random.default_rng(seed), []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        a = auc(y[i], s[i])
        if a is not None:
            vals.append(a)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return round(float(lo), 3), round(float(hi), 3)


def threshold_table(y: np.ndarray, s: np.ndarray, p_next: float) -> list[dict[str, float]]:
    """Escalate answers whose statistic is below each decile of it (strictly below)."""
    rows = []
    for q in range(0, 100, 10):
        thr = float(np.percentile(s, q)) if q else -np.inf
        keep = s >= thr
        share = 1 - keep.mean()
        acc_kept = float(y[keep].mean()) if keep.any() else float("nan")
        local_acc = float(y.mean())
        rows.append(
            {
                "decile": q,
                "threshold": round(thr, 3),
                "escalated_share": round(float(share), 3),
                "accepted_local_accuracy": round(acc_kept, 3),
                "overall_accuracy_next_right": round(float(y[keep].sum() + (~keep).sum()) / len(y), 3),
                f"overall_accuracy_next_p{p_next}": round(float(y[keep].sum() + p_next * (~keep).sum()) / len(y), 3),
                "random_escalation_same_share": round(local_acc + float(share) * (1 - local_acc), 3),
            }
        )
    return rows


def analyse(items: Sequence[Item], rows: Sequence[dict[str, Any]], p_next: float) -> dict[str, Any]:
    by_id = {it.id: it for it in items}
    scored = []
    for row in rows:
        values = token_logprobs(row["logprobs"])
        if not values:
            continue
        stats = {name: f(values, row["logprobs"]) for name, f in STATS.items()}
        scored.append(dict(row, correct=bool(by_id[row["id"]].check(row["answer"])), stats=stats))
    y = np.array([r["correct"] for r in scored], dtype=int)
    cats = sorted({r["category"] for r in scored})
    levels = sorted({(r["category"], r["level"]) for r in scored})
    res: dict[str, Any] = {
        "items": len(rows),
        "with_logprobs": len(scored),
        "accuracy": round(float(y.mean()), 3),
        "per_category": {},
        "per_level": {
            f"{c}/{lv}": {
                "n": sum(1 for r in scored if r["level"] == lv and r["category"] == c),
                "accuracy": round(
                    float(np.mean([r["correct"] for r in scored if r["level"] == lv and r["category"] == c])), 3
                ),
            }
            for c, lv in levels
        },
        "auc": {},
    }
    for c in cats:
        mask = np.array([r["category"] == c for r in scored])
        res["per_category"][c] = {"n": int(mask.sum()), "accuracy": round(float(y[mask].mean()), 3)}
    for name in STATS:
        s = np.array([r["stats"][name] for r in scored])
        per_cat = {c: auc(y[m], s[m]) for c in cats if (m := np.array([r["category"] == c for r in scored])).any()}
        defined = [a for a in per_cat.values() if a is not None]
        res["auc"][name] = {
            "overall": auc(y, s),
            "overall_ci95": auc_ci(y, s),
            "per_category": per_cat,
            "mean_within_category": round(float(np.mean(defined)), 3) if defined else None,
        }
    best = max((n for n in STATS if "baseline" not in n), key=lambda n: res["auc"][n]["overall"] or 0)
    s_best = np.array([r["stats"][best] for r in scored])
    res["best_statistic"] = best
    res["thresholds"] = threshold_table(y, s_best, p_next)
    res["thresholds_per_category"] = {
        c: threshold_table(y[m], s_best[m], p_next)
        for c in cats
        if (m := np.array([r["category"] == c for r in scored])).any()
    }
    res["_scored"] = scored
    return res


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    scored = res["_scored"]
    y = np.array([r["correct"] for r in scored], dtype=int)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5))
    for name in STATS:
        s = np.array([r["stats"][name] for r in scored])
        fpr, tpr, _ = roc_curve(y, s)
        ax1.plot(
            fpr, tpr, label=f"{name} (AUC {res['auc'][name]['overall']:.2f})", ls="--" if "baseline" in name else "-"
        )
    ax1.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax1.set(xlabel="false positive rate (wrong answers accepted)", ylabel="true positive rate (right answers accepted)")
    ax1.set_title(f"ROC: confidence vs correctness, SmolLM2-135M, n={len(y)}")
    ax1.legend(fontsize=8, loc="lower right")

    best = res["best_statistic"]
    s = np.array([r["stats"][best] for r in scored])
    order = np.argsort(s)  # escalate the least confident first
    shares = np.arange(len(y) + 1) / len(y)
    right_kept = np.concatenate([[y.sum()], y.sum() - np.cumsum(y[order])])
    overall = (right_kept + np.arange(len(y) + 1)) / len(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        kept_acc = right_kept / (len(y) - np.arange(len(y) + 1))
    ax2.plot(shares, overall, label=f"overall, escalate lowest {best} (next tier right)")
    ax2.plot(shares, kept_acc, label="accuracy of accepted local answers")
    ax2.plot(shares, y.mean() + shares * (1 - y.mean()), color="grey", ls="--", label="overall, escalate at random")
    for c in sorted({r["category"] for r in scored}):
        m = np.array([r["category"] == c for r in scored])
        yc, sc = y[m], s[m]
        o = np.argsort(sc)
        rk = np.concatenate([[yc.sum()], yc.sum() - np.cumsum(yc[o])])
        ax2.plot(
            np.arange(len(yc) + 1) / len(yc),
            (rk + np.arange(len(yc) + 1)) / len(yc),
            lw=0.8,
            alpha=0.6,
            label=f"overall, {c} only",
        )
    ax2.set(xlabel="share escalated to the next tier (cost)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    ax2.set_title(f"Accuracy vs escalation share ({best})")
    ax2.legend(fontsize=8, loc="lower right")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="ask only a seeded sample of this many items")
    ap.add_argument("--reuse", action="store_true", help="re-score the saved raw answers, no server")
    ap.add_argument("--p-next", type=float, default=0.9, help="accuracy assumed for escalated answers (variant)")
    ap.add_argument("--overhead-rounds", type=int, default=3)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    raw_path = OUT / "confidence_raw.jsonl"
    items = labelled_set()
    if args.limit:
        items = sorted(random.Random(0).sample(items, args.limit), key=lambda it: it.id)
    extra: dict[str, Any] = {}
    if args.reuse:
        rows = [json.loads(line) for line in raw_path.read_text().splitlines()]
        extra = json.loads((OUT / "confidence.json").read_text()).get("server", {})
    else:
        gguf = bundled_gguf()
        assert gguf is not None, "install the [local] extra"
        sup = LocalModelSupervisor(LocalModelConfig(model_path=gguf, port=free_port()))
        sup.start()
        url = sup.config.base_url + "/chat/completions"
        try:
            with httpx.Client(timeout=300) as http:
                print(f"asking {len(items)} items (temperature 0, top_logprobs {TOP_LOGPROBS})", flush=True)
                rows = ask_all(http, url, items)
                raw_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
                by_cat: dict[str, Item] = {}
                for it in items:
                    by_cat.setdefault(it.category, it)
                probe = list(by_cat.values())
                print("logprob overhead and stream check ...", flush=True)
                extra["logprob_overhead"] = logprob_overhead(http, url, probe, args.overhead_rounds)
                expected = {r["id"]: token_logprobs(r["logprobs"]) for r in rows}
                extra["stream_vs_plain"] = [stream_matches(http, url, it, expected[it.id]) for it in probe]
        finally:
            sup.stop()
    res = analyse(items, rows, args.p_next)
    res["server"] = extra
    plot(res, OUT / "confidence.png")
    res.pop("_scored")
    (OUT / "confidence.json").write_text(json.dumps(res, indent=2) + "\n")
    report(res)


def report(res: dict[str, Any]) -> None:
    print(f"\n{res['with_logprobs']}/{res['items']} answers with logprobs; accuracy {res['accuracy']:.1%}")
    for c, v in res["per_category"].items():
        print(f"  {c:13s} n={v['n']:3d} accuracy {v['accuracy']:.1%}")
    print("  per level: " + ", ".join(f"{k} {v['accuracy']:.0%}" for k, v in res["per_level"].items()))
    cats = list(res["per_category"])
    print("\nAUC (ROC) of each statistic vs correctness:")
    print(f"  {'statistic':22s} overall [95% CI]     within-cat mean  " + "  ".join(f"{c:>12s}" for c in cats))
    for name, a in res["auc"].items():
        per = "  ".join(f"{a['per_category'].get(c) or float('nan'):12.3f}" for c in cats)
        print(
            f"  {name:22s} {a['overall']:.3f} [{a['overall_ci95'][0]:.3f}, {a['overall_ci95'][1]:.3f}]  {a['mean_within_category'] or float('nan'):15.3f}  {per}"
        )
    print(f"\nThresholds at deciles of {res['best_statistic']} (escalate below):")
    keys = list(res["thresholds"][0])
    print("  " + " | ".join(keys))
    for row in res["thresholds"]:
        print("  " + " | ".join(str(row[k]) for k in keys))
    for k, v in res["server"].items():
        print(f"\n{k}: {json.dumps(v)}")


if __name__ == "__main__":
    main()
