"""Does token-logprob confidence from the local SmolLM2 tier mean anything? (issue #15)

Starts the local model server, asks every item of the labelled set (bench/confidence_set.py)
at temperature 0 with ``logprobs: true, top_logprobs: 5``, checks each answer mechanically,
and reports how well each candidate confidence statistic separates right answers from wrong
ones (ROC AUC, overall and per category) and what escalating below a threshold would cost and buy.

python bench/confidence.py [--limit N]   # asks every item (55 min on 2 busy shared cores)
python bench/confidence.py --reuse [--no-server]   # re-score bench/out/confidence_raw.jsonl
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
from gateway.local.supervisor import LocalModelSupervisor, bundled_gguf
from gateway.quality.confidence import token_logprobs
from gateway.settings import LocalModelSettings

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
    """The same requests without and with logprobs, back to back (greedy: the same tokens)."""
    ratios, added_ms_per_token = [], []
    for _ in range(rounds):
        for item in items:
            took = {}
            for lp in (False, True):
                t0 = time.perf_counter()
                r = http.post(url, json=body(item, logprobs=lp))
                r.raise_for_status()
                took[lp] = time.perf_counter() - t0
            ratios.append(took[True] / took[False])
            added_ms_per_token.append((took[True] - took[False]) * 1000 / r.json()["usage"]["completion_tokens"])
    return {
        "pairs": len(ratios),
        "median_ratio_with_to_without": round(statistics.median(ratios), 2),
        "median_added_ms_per_completion_token": round(statistics.median(added_ms_per_token), 1),
    }


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


def _truncated(row: dict[str, Any]) -> bool:
    return bool(row["finish_reason"] == "length")


STATS: dict[str, Callable[[list[float], dict[str, Any]], float]] = {
    "mean": lambda v, row: float(np.mean(v)),
    "min": lambda v, row: min(v),
    "lowest3_mean": lambda v, row: float(np.mean(sorted(v)[:3])),
    # What a buffered stream knows after its first K tokens:
    "first8_mean": lambda v, row: float(np.mean(v[:8])),
    "first16_mean": lambda v, row: float(np.mean(v[:16])),
    "first32_mean": lambda v, row: float(np.mean(v[:32])),
    "sum": lambda v, row: float(np.sum(v)),
    "margin_mean": lambda v, row: float(np.mean(_margins(row["logprobs"]) or [0.0])),
    "margin_min": lambda v, row: min(_margins(row["logprobs"]) or [0.0]),
    # Free signals, known without asking for logprobs: a long answer, a cut-off answer.
    "length (baseline)": lambda v, row: -float(len(v)),
    "length+truncated (baseline)": lambda v, row: -float(len(v)) - 1e4 * _truncated(row),
}
BASELINES = [n for n in STATS if "baseline" in n]


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


def cv_scores(y: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Out-of-fold probabilities of a logistic regression on the features (5-fold, stratified)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression())
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return np.asarray(cross_val_predict(model, features, y, cv=cv, method="predict_proba")[:, 1])


def gain_ci(y: np.ndarray, base: np.ndarray, better: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval of AUC(better) - AUC(base)."""
    rng, vals = np.random.default_rng(seed), []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        a, b = auc(y[i], better[i]), auc(y[i], base[i])
        if a is not None and b is not None:
            vals.append(a - b)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return round(float(lo), 3), round(float(hi), 3)


def overall_escalating_lowest(y: np.ndarray, score: np.ndarray, k: int) -> float:
    """Overall accuracy when the k lowest-scored answers go up and come back right (ties: seeded random)."""
    order = np.lexsort((np.random.default_rng(0).random(len(y)), score))
    return float(y[order[k:]].sum() + k) / len(y)


def threshold_table(
    y: np.ndarray,
    s: np.ndarray,
    p_next: float,
    thresholds: Sequence[float],
    forced: np.ndarray | None = None,
    free: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Escalate answers whose statistic is below each threshold (and every ``forced`` one).

    ``free``: a score known without logprobs; the same number of answers escalated by it, for comparison.
    """
    forced = np.zeros(len(y), dtype=bool) if forced is None else forced
    local_acc = float(y.mean())
    rows = []
    for thr in thresholds:
        keep = (s >= thr) & ~forced
        share = float(1 - keep.mean())
        free_col = {}
        if free is not None:
            free_col = {"free_rule_same_share": round(overall_escalating_lowest(y, free, int((~keep).sum())), 3)}
        rows.append(
            {
                "threshold": round(thr, 3),
                "escalated_share": round(share, 3),
                "accepted_local_accuracy": round(float(y[keep].mean()), 3) if keep.any() else float("nan"),
                "overall_accuracy_next_right": round(float(y[keep].sum() + (~keep).sum()) / len(y), 3),
                f"overall_accuracy_next_p{p_next}": round(float(y[keep].sum() + p_next * (~keep).sum()) / len(y), 3),
                "random_escalation_same_share": round(local_acc + share * (1 - local_acc), 3),
                **free_col,
            }
        )
    return rows


def deciles(s: np.ndarray) -> list[float]:
    return [-np.inf] + [float(np.percentile(s, q)) for q in range(10, 100, 10)]


def analyse(items: Sequence[Item], rows: Sequence[dict[str, Any]], p_next: float, table_stat: str) -> dict[str, Any]:
    by_id = {it.id: it for it in items}
    scored = []
    for row in rows:
        values = token_logprobs(row["logprobs"])
        if not values:
            continue
        stats = {name: f(values, row) for name, f in STATS.items()}
        scored.append(dict(row, correct=bool(by_id[row["id"]].check(row["answer"])), stats=stats))
    y = np.array([r["correct"] for r in scored], dtype=int)
    cat = np.array([r["category"] for r in scored])
    level = np.array([f"{r['category']}/{r['level']}" for r in scored])
    cut = np.array([_truncated(r) for r in scored])
    cats = sorted(set(cat))

    def acc(m: np.ndarray) -> float | None:
        return round(float(y[m].mean()), 3) if m.any() else None

    res: dict[str, Any] = {
        "items": len(rows),
        "with_logprobs": len(scored),
        "accuracy": acc(np.ones(len(y), dtype=bool)),
        "truncated_share": round(float(cut.mean()), 3),
        "accuracy_truncated": acc(cut),
        "accuracy_finished": acc(~cut),
        "per_category": {
            c: {
                "n": int((cat == c).sum()),
                "accuracy": acc(cat == c),
                "truncated_share": round(float(cut[cat == c].mean()), 3),
                "accuracy_truncated": acc((cat == c) & cut),
            }
            for c in cats
        },
        "per_level": {lv: {"n": int((level == lv).sum()), "accuracy": acc(level == lv)} for lv in sorted(set(level))},
        "auc": {},
    }
    free = np.c_[np.log([len(token_logprobs(r["logprobs"])) for r in scored]), cut]
    free_cv = cv_scores(y, free)
    res["cv_auc_free_signals"] = auc(y, free_cv)  # log(tokens) and truncation, no logprobs
    for name in STATS:
        s = np.array([r["stats"][name] for r in scored])
        per_cat = {c: auc(y[cat == c], s[cat == c]) for c in cats}
        defined = [a for a in per_cat.values() if a is not None]
        res["auc"][name] = {
            "overall": auc(y, s),
            "overall_ci95": auc_ci(y, s),
            "per_category": per_cat,
            "mean_within_category": round(float(np.mean(defined)), 3) if defined else None,
            "finished_only": auc(y[~cut], s[~cut]),
        }
        if name not in BASELINES:
            with_stat = cv_scores(y, np.c_[free, s])
            res["auc"][name]["cv_with_free_signals"] = auc(y, with_stat)
            res["auc"][name]["cv_gain_over_free_ci95"] = gain_ci(y, free_cv, with_stat)
    res["best_statistic"] = max((n for n in STATS if n not in BASELINES), key=lambda n: res["auc"][n]["overall"] or 0)
    res["table_statistic"] = table_stat
    s = np.array([r["stats"][table_stat] for r in scored])
    thresholds = deciles(s)
    free_rule = np.array([r["stats"]["length+truncated (baseline)"] for r in scored])
    res["thresholds"] = threshold_table(y, s, p_next, thresholds, free=free_rule)
    res["thresholds_truncated_escalated"] = threshold_table(y, s, p_next, deciles(s[~cut]), cut, free_rule)
    res["thresholds_per_category"] = {  # the same (global) thresholds, applied to each category
        c: threshold_table(y[cat == c], s[cat == c], p_next, thresholds) for c in cats
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
    for i, name in enumerate(STATS):
        s = np.array([r["stats"][name] for r in scored])
        fpr, tpr, _ = roc_curve(y, s)
        style = (
            {"color": "black", "ls": ("--", ":")[BASELINES.index(name)]} if name in BASELINES else {"color": f"C{i}"}
        )
        ax1.plot(fpr, tpr, label=f"{name} (AUC {res['auc'][name]['overall']:.2f})", **style)
    ax1.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax1.set(xlabel="false positive rate (wrong answers accepted)", ylabel="true positive rate (right answers accepted)")
    ax1.set_title(f"ROC: confidence vs correctness, SmolLM2-135M, n={len(y)}")
    ax1.legend(fontsize=8, loc="lower right")

    def curve(score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(score, kind="stable")  # escalate the least confident first
        escalated = np.arange(len(y) + 1)
        right_kept = np.concatenate([[y.sum()], y.sum() - np.cumsum(y[order])])
        with np.errstate(invalid="ignore", divide="ignore"):
            return escalated / len(y), (right_kept + escalated) / len(y), right_kept / (len(y) - escalated)

    stat = res["table_statistic"]
    s = np.array([r["stats"][stat] for r in scored])
    cut = np.array([_truncated(r) for r in scored])
    shares, overall, kept_acc = curve(s)
    ax2.plot(shares, overall, label=f"overall: escalate lowest {stat}")
    ax2.plot(*curve(np.where(cut, -np.inf, s))[:2], label=f"overall: escalate truncated, then lowest {stat}")
    free = np.array([r["stats"]["length+truncated (baseline)"] for r in scored])
    ax2.plot(*curve(free)[:2], ls="--", label="overall: escalate truncated, then longest (no logprobs)")
    ax2.plot(shares, y.mean() + shares * (1 - y.mean()), color="grey", ls=":", label="overall: escalate at random")
    ax2.plot(shares, kept_acc, color="tab:red", lw=0.9, label=f"accuracy of accepted local answers ({stat})")
    ax2.set(xlabel="share escalated to the next tier (cost)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    ax2.set_title("Accuracy if escalated answers are right, vs share escalated")
    ax2.legend(fontsize=8, loc="lower right")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def server_checks(
    http: httpx.Client, url: str, items: Sequence[Item], rows: Sequence[dict[str, Any]], rounds: int
) -> dict[str, Any]:
    probe = [it for c in sorted({it.category for it in items}) for it in [i for i in items if i.category == c][:2]]
    print(f"logprob overhead ({len(probe)} items x {rounds}) and stream check ...", flush=True)
    expected = {r["id"]: token_logprobs(r["logprobs"]) for r in rows}
    return {
        "logprob_overhead": logprob_overhead(http, url, probe, rounds),
        "stream_vs_plain": [stream_matches(http, url, it, expected[it.id]) for it in probe],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="ask only a seeded sample of this many items")
    ap.add_argument("--reuse", action="store_true", help="re-score the saved raw answers instead of asking again")
    ap.add_argument("--no-server", action="store_true", help="with --reuse: keep the saved server figures")
    ap.add_argument("--p-next", type=float, default=0.9, help="accuracy assumed for escalated answers (variant)")
    ap.add_argument("--overhead-rounds", type=int, default=2)
    ap.add_argument("--table-stat", default="lowest3_mean", choices=[n for n in STATS if n not in BASELINES])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    raw_path = OUT / "confidence_raw.jsonl"
    items = labelled_set()
    if args.limit:
        items = sorted(random.Random(0).sample(items, args.limit), key=lambda it: it.id)
    rows = [json.loads(line) for line in raw_path.read_text().splitlines()] if args.reuse else []
    if args.reuse and args.no_server:
        server = json.loads((OUT / "confidence.json").read_text()).get("server", {})
    else:
        gguf = bundled_gguf()
        assert gguf is not None, "install the [local] extra"
        sup = LocalModelSupervisor(LocalModelSettings(model_path=gguf, port=free_port()))
        sup.start()
        url = sup.base_url + "/chat/completions"
        try:
            with httpx.Client(timeout=600) as http:
                if not args.reuse:
                    print(f"asking {len(items)} items (temperature 0, top_logprobs {TOP_LOGPROBS})", flush=True)
                    rows = ask_all(http, url, items)
                    raw_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
                server = server_checks(http, url, items, rows, args.overhead_rounds)
        finally:
            sup.stop()
    res = analyse(items, rows, args.p_next, args.table_stat)
    res["server"] = server
    plot(res, OUT / "confidence.png")
    res.pop("_scored")
    (OUT / "confidence.json").write_text(json.dumps(res, indent=2) + "\n")
    report(res)


def _table(rows: Sequence[dict[str, Any]]) -> None:
    keys = list(rows[0])
    print("  " + " | ".join(keys))
    for row in rows:
        print("  " + " | ".join(str(row[k]) for k in keys))


def report(res: dict[str, Any]) -> None:
    print(f"\n{res['with_logprobs']}/{res['items']} answers with logprobs; accuracy {res['accuracy']:.1%}")
    print(
        f"  truncated (finish_reason=length): {res['truncated_share']:.1%} of answers, "
        f"{res['accuracy_truncated']:.1%} right; finished answers {res['accuracy_finished']:.1%} right"
    )
    for c, v in res["per_category"].items():
        print(f"  {c:13s} n={v['n']:3d} accuracy {v['accuracy']:.1%}, truncated {v['truncated_share']:.0%}")
    print("  per level: " + ", ".join(f"{k} {v['accuracy']:.0%}" for k, v in res["per_level"].items()))
    cats = list(res["per_category"])
    print(
        f"\nAUC (ROC) vs correctness; free signals alone (CV logistic on log tokens + truncated): {res['cv_auc_free_signals']}"
    )
    head = ["overall [95% CI]", "within-cat", "finished", "CV +free", "gain CI", *cats]
    print(f"  {'statistic':28s} " + " ".join(f"{h:>18s}" for h in head))
    for name, a in res["auc"].items():
        cells = [
            f"{a['overall']:.3f} [{a['overall_ci95'][0]:.2f}, {a['overall_ci95'][1]:.2f}]",
            a["mean_within_category"],
            a["finished_only"],
            a.get("cv_with_free_signals"),
            a.get("cv_gain_over_free_ci95") and "[{:+.3f}, {:+.3f}]".format(*a["cv_gain_over_free_ci95"]),
            *(a["per_category"][c] for c in cats),
        ]
        print(f"  {name:28s} " + " ".join(f"{c if c is not None else '-':>18}" for c in cells))
    print(f"\nThresholds at deciles of {res['table_statistic']} (escalate below):")
    _table(res["thresholds"])
    print("\nTruncated answers always escalated, thresholds at deciles of the rest:")
    _table(res["thresholds_truncated_escalated"])
    for k, v in res["server"].items():
        print(f"\n{k}: {json.dumps(v)}")


if __name__ == "__main__":
    main()
