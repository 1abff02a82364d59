"""From raw measurements to figures over the direct floor, the headline ratios against each peer,
medians over repeated runs, the printed table and bench/out/gateway.png."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

PINNED, AUTO = "tierwise-pinned", "tierwise-auto"
RESPONSES = "tierwise-responses"  # the pinned route through /v1/responses
PINNED_JUDGED, AUTO_JUDGED = "tierwise-pinned-judged", "tierwise-auto-judged"  # quality loop on, 5%
ONE_WORKER, TWO_WORKERS = "tierwise-1w-redis", "tierwise-2w-redis"
LITELLM, PORTKEY = "litellm-proxy", "portkey"


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def figures(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One flat row per contender; latencies as added over calling the mock directly."""
    d = raw["direct"]
    ds = d.get("stream", {})
    out: dict[str, dict[str, Any]] = {}
    for name, r in raw.items():
        s, mx, rss = r.get("stream", {}), r.get("max", {}), r.get("rss_mb", {})
        chunks = s.get("chunks")
        relay_ms = _sub(s.get("span_p50_ms"), ds.get("span_p50_ms"))
        out[name] = {
            "errors": r["errors"] + s.get("errors", 0),
            "p50_ms": r["p50_ms"],
            "added_p50_ms": _sub(r["p50_ms"], d["p50_ms"]),
            "added_p99_ms": _sub(r["p99_ms"], d["p99_ms"]),
            "ttft_p50_ms": s.get("ttft_p50_ms"),
            "ttft_overhead_ms": _sub(s.get("ttft_p50_ms"), ds.get("ttft_p50_ms")),
            "ttlt_p50_ms": s.get("ttlt_p50_ms"),
            "ttlt_overhead_ms": _sub(s.get("ttlt_p50_ms"), ds.get("ttlt_p50_ms")),
            # first to last content chunk, over direct's: what relaying the other chunks costs
            "per_chunk_us": None if relay_ms is None or not chunks else relay_ms / (chunks - 1) * 1000,
            "content_events": s.get("content_events_p50"),
            "max_rps": mx.get("rps"),
            "max_connections": mx.get("connections"),
            "cpu_s_per_1k": mx.get("cpu_s_per_1k"),
            "rss_mb": rss.get("100k", rss.get("after_runs")),
            "rss_growth_pct": None if "100k" not in rss else (rss["100k"] / rss["10k"] - 1) * 100,
            "unique_added_p50_ms": _sub(r.get("unique_prompts", {}).get("p50_ms"), d["p50_ms"]),
            "journal_append_us": r.get("journal", {}).get("append_us"),
        }
    return out


# headline: key -> (label, how it is computed from the figures, target (None: no target), whether lower is better)
Headline = tuple[str, Callable[[dict[str, dict[str, Any]]], float | None], float | None, bool]


def _fig(c: dict[str, dict[str, Any]], name: str, key: str) -> float | None:
    value: float | None = c.get(name, {}).get(key)
    return value


HEADLINES: dict[str, Headline] = {
    "added_p50_vs_portkey": (
        "added p50, pinned / Portkey",
        lambda c: _div(_fig(c, PINNED, "added_p50_ms"), _fig(c, PORTKEY, "added_p50_ms")),
        0.2,
        True,
    ),
    "added_p50_vs_litellm": (
        "added p50, pinned / LiteLLM",
        lambda c: _div(_fig(c, PINNED, "added_p50_ms"), _fig(c, LITELLM, "added_p50_ms")),
        0.08,
        True,
    ),
    "max_rps_vs_portkey": (
        "max req/s, pinned / Portkey (1 process each)",
        lambda c: _div(_fig(c, PINNED, "max_rps"), _fig(c, PORTKEY, "max_rps")),
        2.5,
        False,
    ),
    "max_rps_vs_litellm": (
        "max req/s, pinned / LiteLLM",
        lambda c: _div(_fig(c, PINNED, "max_rps"), _fig(c, LITELLM, "max_rps")),
        3.0,
        False,
    ),
    # CPU per request decides max throughput on an idle machine and moves far less than req/s when
    # other work shares the cores: a cross-check of the throughput ratio
    "cpu_per_request_portkey_over_pinned": (
        "CPU per request, Portkey / pinned",
        lambda c: _div(_fig(c, PORTKEY, "cpu_s_per_1k"), _fig(c, PINNED, "cpu_s_per_1k")),
        None,
        False,
    ),
    "ttft_overhead_ms": ("TTFT over direct, pinned (ms)", lambda c: _fig(c, PINNED, "ttft_overhead_ms"), 1.0, True),
    "per_chunk_us": ("per-chunk relay cost, pinned (µs)", lambda c: _fig(c, PINNED, "per_chunk_us"), 20.0, True),
    "two_over_one_worker": (
        "max req/s, 2 workers / 1 (Redis limits)",
        lambda c: _div(_fig(c, TWO_WORKERS, "max_rps"), _fig(c, ONE_WORKER, "max_rps")),
        1.7,
        False,
    ),
    "auto_over_pinned_ms": (
        "added p50, auto - pinned (ms)",
        lambda c: _sub(_fig(c, AUTO, "added_p50_ms"), _fig(c, PINNED, "added_p50_ms")),
        3.0,
        True,
    ),
    "rss_growth_pct": ("RSS growth 10k -> 100k requests (%)", lambda c: _fig(c, PINNED, "rss_growth_pct"), 5.0, True),
    "responses_over_chat_ms": (
        "added p50, Responses API - chat, pinned (ms)",
        lambda c: _sub(_fig(c, RESPONSES, "added_p50_ms"), _fig(c, PINNED, "added_p50_ms")),
        None,
        True,
    ),
    "judged_over_plain_ms": (
        "added p50, quality loop on - off, pinned (ms)",
        lambda c: _sub(_fig(c, PINNED_JUDGED, "added_p50_ms"), _fig(c, PINNED, "added_p50_ms")),
        None,
        True,
    ),
    "judged_cpu_ratio": (
        "CPU per request, quality loop on / off, pinned",
        lambda c: _div(_fig(c, PINNED_JUDGED, "cpu_s_per_1k"), _fig(c, PINNED, "cpu_s_per_1k")),
        None,
        True,
    ),
    "journal_append_us": (
        "ledger journal append per request (µs)",
        lambda c: _fig(c, PINNED, "journal_append_us"),
        None,
        True,
    ),
}


def headlines(c: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    return {key: fn(c) for key, (_, fn, _, _) in HEADLINES.items()}


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every figure and of every headline over the runs (errors: summed). A ratio's
    median is taken over the runs' ratios, so each ratio compares contenders of the same run."""
    names = list(dict.fromkeys(n for r in runs for n in r["figures"]))
    contenders: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = [r["figures"][name] for r in runs if name in r["figures"]]
        contenders[name] = {k: _median([row.get(k) for row in rows]) for k in rows[0]}
        contenders[name]["errors"] = sum(row["errors"] for row in rows)
    heads = {k: _median([r["headlines"][k] for r in runs]) for k in HEADLINES}
    return {"contenders": contenders, "headlines": heads}


def _f(v: float | None, n: int = 2) -> str:
    return "-" if v is None else f"{v:,.{n}f}"


def print_table(result: dict[str, Any]) -> None:
    c, h = result["contenders"], result["headlines"]
    n = len(result["runs"])
    plan = result["plan"]
    print(
        f"\nGateway benchmark {result['date']} ({result['machine']}); "
        f"{'median of ' + str(n) + ' runs' if n > 1 else 'one run'}; open loop at {plan['rate']} req/s, "
        f"streams of {plan['stream_chunks']} chunks at {plan['stream_rate']} req/s; one worker unless named"
    )
    cols = ("+p50 ms", "+p99 ms", "TTFT +ms", "chunk µs", "max rps", "CPU-s/1k", "RSS MB")
    print(f"{'contender':<24}" + "".join(f"{col:>10}" for col in cols))
    for name, r in c.items():
        values = (
            _f(r["added_p50_ms"]),
            _f(r["added_p99_ms"]),
            _f(r["ttft_overhead_ms"]),
            _f(r["per_chunk_us"], 1),
            _f(r["max_rps"], 0),
            _f(r["cpu_s_per_1k"]),
            _f(r["rss_mb"], 0),
        )
        print(f"{name:<24}" + "".join(f"{v:>10}" for v in values))
    print()
    for key, (label, _, target, lower) in HEADLINES.items():
        v = h.get(key)
        if target is None:
            print(f"{label:<46}{_f(v, 3):>10}   (no target)")
            continue
        verdict = "" if v is None else ("ok" if (v <= target if lower else v >= target) else "MISSED")
        print(f"{label:<46}{_f(v, 3):>10}   target {'<=' if lower else '>='} {target:g}  {verdict}")


def plot(result: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["contenders"]
    names = [n for n in c if n != "direct"]
    colours = {PORTKEY: "#ff7f0e", LITELLM: "#d62728"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), dpi=100)

    def bars(ax: Any, key: str, title: str, ylabel: str, log: bool, fmt: str) -> None:
        shown = [n for n in names if c[n].get(key) is not None]
        ax.set_title(title, fontsize=10)
        if not shown:
            ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=ax.transAxes)
            return
        values = [c[n][key] for n in shown]
        if log:  # a figure at or below zero (noise around a tiny cost) shows as a stub, labelled
            floor = min([v for v in values if v > 0], default=1.0) / 4
            values = [max(v, floor) for v in values]
        rects = ax.bar(range(len(shown)), values, color=[colours.get(n, "#1f77b4") for n in shown])
        ax.bar_label(rects, [fmt.format(c[n][key]) for n in shown], fontsize=8)
        ax.set_xticks(range(len(shown)), shown, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)

    plan = result["plan"]
    bars(
        axes[0][0],
        "added_p50_ms",
        f"Added p50 latency, open loop at {plan['rate']} req/s",
        "ms over direct (log)",
        True,
        "{:.2f}",
    )
    bars(axes[0][1], "max_rps", "Max throughput, < 1% errors (wrk)", "requests/s (log)", True, "{:,.0f}")
    bars(axes[1][0], "ttft_overhead_ms", "Stream: time to first token over direct", "ms (log)", True, "{:.2f}")
    bars(
        axes[1][1],
        "per_chunk_us",
        f"Stream: relay cost per chunk ({plan['stream_chunks']}-chunk stream)",
        "µs per chunk (log)",
        True,
        "{:.1f}",
    )
    n = len(result["runs"])
    fig.suptitle(
        f"Tierwise vs Portkey gateway vs LiteLLM proxy, same mock upstream "
        f"({result['date']}, {result['machine']}, {'median of ' + str(n) + ' runs' if n > 1 else 'one run'})"
    )
    fig.tight_layout()
    fig.savefig(out_dir / "gateway.png")
    plt.close(fig)
