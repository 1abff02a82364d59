"""Gateway benchmark: Tierwise vs Portkey's gateway vs LiteLLM proxy, same machine, same run, same
mock upstream.

    python bench/run.py              # full run (~12 min): table, bench/out/gateway.json, bench/out/gateway.png
    python bench/run.py --runs 3     # the whole comparison three times; medians of every figure and ratio
    python bench/run.py --smoke      # ~1 min: keeps the harness working (used by the test suite)

Every process is separate: the mock upstream, each gateway, the open-loop load generator
(bench/loadgen.py) and wrk for closed-loop throughput. A peer that is not installed (make bench
installs both) is skipped with a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import contenders
import orjson
import redis
import report
from measure import HERE, PY, Plan, Target, free_port, loadgen, log, measure, process, rss_mb, tree, wrk

from gateway.ledger.journal import Journal
from gateway.ledger.models import LedgerRow

OUT = HERE / "out"


def rss_growth(t: Target) -> dict[str, Any]:
    """Resident memory after warm-up, after 10k and after 100k requests (wrk, 32 connections)."""
    marks = {"warm": rss_mb(t.pids)}
    total = 0
    while total < 100_000:
        total += wrk(t, 10, 32)["requests"]
        if "10k" not in marks and total >= 10_000:
            marks["10k"] = rss_mb(t.pids)
    marks["100k"] = rss_mb(t.pids)
    log(f"tierwise RSS: warm {marks['warm']:.0f} MB, 10k {marks['10k']:.0f} MB, 100k {marks['100k']:.0f} MB")
    return {**marks, "requests": total}


def journal_cost(ledger_db: Path, tmp: Path, rows: int = 20_000) -> dict[str, float]:
    """What the crash-durable ledger adds to a request on its path: serialising the row and the
    journal's write() before the response is sent (the fsync is a second's batch, off the path).
    Median over batches of 1,000 appends of a row the run wrote (an `auto` one, the longest)."""
    with sqlite3.connect(ledger_db) as con:
        con.row_factory = sqlite3.Row
        stored = con.execute("SELECT * FROM requests ORDER BY length(router_scores) DESC LIMIT 1").fetchone()
    fields = {k: v for k, v in dict(stored).items() if k in LedgerRow.__dataclass_fields__ and k != "created_at"}
    row = LedgerRow(**fields)
    journal = Journal(tmp / "journal-cost")
    per_row = []
    for _ in range(rows // 1000):
        start = time.perf_counter()
        for _ in range(1000):
            journal.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        per_row.append((time.perf_counter() - start) * 1000)  # ms per 1,000 = µs per row
    journal.close()
    result = {"append_us": statistics.median(per_row), "row_bytes": len(orjson.dumps(row))}
    log(f"ledger journal: {result['append_us']:.1f} µs per row ({result['row_bytes']} bytes), on the request path")
    return result


def purposes(ledger_db: Path) -> dict[str, int]:
    """Rows by purpose (client, shadow, judge): that the quality loop ran, and how much."""
    with sqlite3.connect(ledger_db) as con:
        counts = dict(con.execute("SELECT purpose, count(*) FROM requests GROUP BY purpose").fetchall())
    log(f"quality loop on: ledger rows by purpose {counts}")
    return counts


def redis_reachable(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        log(f"Redis not reachable at {url} ({type(exc).__name__}); skipping the worker rows")
        return False
    return True


def one_run(args: argparse.Namespace, plan: Plan, tmp: Path) -> dict[str, dict[str, Any]]:
    raw: dict[str, dict[str, Any]] = {}
    mport = free_port()
    mock = f"http://127.0.0.1:{mport}"
    with process([PY, str(HERE / "mock_upstream.py"), "--port", str(mport)], mock + "/v1/models") as mock_proc:
        raw["direct"] = measure("direct", Target(mock + "/v1/chat/completions", "mock", tree(mock_proc.pid)), plan)

        no_stream = dataclasses.replace(plan, stream_chunks=0)
        with contenders.tierwise(mock, tmp / "tierwise") as t:
            raw[report.PINNED] = measure(report.PINNED, t, plan)
            auto = dataclasses.replace(t, model="auto")
            raw[report.AUTO] = measure(report.AUTO, auto, plan)
            # a new prompt every request: the router encodes each one
            raw[report.AUTO]["unique_prompts"] = loadgen(auto, max(5, plan.rate // 5), plan.seconds, unique=True)
            # the same pinned route through OpenAI's Responses API (translated to chat and back)
            responses = dataclasses.replace(t, url=t.url.replace("/chat/completions", "/responses"), api="responses")
            raw[report.RESPONSES] = measure(report.RESPONSES, responses, no_stream)
            raw[report.PINNED]["rss_mb"] = rss_growth(t) if plan.wrk_seconds else {"warm": rss_mb(t.pids)}
        raw[report.PINNED]["journal"] = journal_cost(tmp / "tierwise" / "ledger.db", tmp)

        # the quality loop on: 5% of requests shadowed by another tier and judged in both orders
        with contenders.tierwise(mock, tmp / "tierwise-judged", judged=True) as t:
            raw[report.PINNED_JUDGED] = measure(report.PINNED_JUDGED, t, no_stream)
            raw[report.AUTO_JUDGED] = measure(report.AUTO_JUDGED, dataclasses.replace(t, model="auto"), no_stream)
        raw[report.PINNED_JUDGED]["ledger_purposes"] = purposes(tmp / "tierwise-judged" / "ledger.db")

        if not args.skip_workers and redis_reachable(args.redis_url):
            # production-like: limits and budgets checked in Redis on every request; no stream phase
            for workers, name in ((1, report.ONE_WORKER), (2, report.TWO_WORKERS)):
                with contenders.tierwise(mock, tmp / name, workers, args.redis_url) as t:
                    raw[name] = measure(name, t, no_stream)

        for name, installed, skip, start in (
            (report.PORTKEY, contenders.portkey_installed(), args.skip_portkey, lambda: contenders.portkey(mock)),
            (report.LITELLM, contenders.litellm_installed(), args.skip_litellm, lambda: contenders.litellm(mock, tmp)),
        ):
            if skip:
                continue
            if not installed:
                log(f"{name} is not installed under bench/ (make bench installs it); skipping it")
                continue
            with start() as t:
                raw[name] = measure(name, t, plan)
                raw[name]["rss_mb"] = {"after_runs": rss_mb(t.pids)}
    return raw


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--runs", type=int, default=1, help="repeat the whole comparison; report medians")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--skip-portkey", action="store_true")
    ap.add_argument("--skip-workers", action="store_true", help="no 1- vs 2-worker rows (they need Redis)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="for the worker rows")
    ap.add_argument("--out", default=str(OUT), help="where gateway.json and gateway.png go")
    args = ap.parse_args()
    have_wrk = shutil.which("wrk") is not None
    if not have_wrk:
        log("wrk not found (make bench installs it): no throughput or memory-growth figures")
    if args.smoke:
        plan = Plan(rate=20, seconds=1, stream_rate=1, stream_seconds=1, stream_chunks=200, wrk_seconds=0)
    else:
        plan = Plan(
            rate=25, seconds=20, stream_rate=1, stream_seconds=30, stream_chunks=200, wrk_seconds=10 if have_wrk else 0
        )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(args.runs):
        log(f"run {i + 1} of {args.runs}")
        raw = one_run(args, plan, Path(tempfile.mkdtemp(prefix="tierwise-bench-")))
        figs = report.figures(raw)
        runs.append({"raw": raw, "figures": figs, "headlines": report.headlines(figs)})
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores",
        "plan": dataclasses.asdict(plan),
        **report.combine(runs),
        "targets": {k: {"label": h[0], "target": h[2], "lower_is_better": h[3]} for k, h in report.HEADLINES.items()},
        "runs": runs,
    }
    (out_dir / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    report.print_table(result)
    report.plot(result, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
