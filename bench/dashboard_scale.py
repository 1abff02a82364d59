"""The dashboard on a big ledger: the time its traffic page spends in queries, on the rollups
(this checkout) and on raw rows (the queries of a revision from before them, ``--before``), on
the same database, in the same run.

Also the ledger writer's insert rate with its rollups and without (each batch's rollup sums are
staged in the transaction of its rows and merged into the rollups later), medians of
``--writer-rounds`` (3), with the CPU time a row beside the rate.

A generator writes a realistic ledger: ``--rows`` client requests over 30 days (busier by day
than by night), 50 keys, three tiers with their deployments and models, two routes, four APIs,
some refused or failed, a few sessions, 3% failing an answer check, 4% escalated, 1% with feedback, 5%
of them sampled for quality (a shadow answer, two judge calls and a judgement each). Rows go in by bulk insert, then ``tierwise ledger rebuild-rollups``'s recount.

    python bench/dashboard_scale.py [--rows 1000000] [--database-url URL] [--before REV]
    python bench/dashboard_scale.py --writer-only [--writer-database-url postgresql+psycopg://...]
    python bench/dashboard_scale.py --writer-only --writer-instructions [--writer-rows 20000]

SQLite by default (a file under bench/out/); ``--database-url`` for PostgreSQL. Prints seconds
per page for the last 24 h, 7 days and all time, median of 3, per revision.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from measure import HERE, PY, REPO, log
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import Engine

from gateway.ledger import LedgerWriter, create_schema, make_engine, rollups
from gateway.ledger.db import normalise_url
from gateway.ledger.models import LedgerEntry, LedgerRow
from gateway.ledger.rollups import rebuild
from gateway.quality.models import Feedback, Judgement
from gateway.settings import Settings

OUT = HERE / "out"

# The page's reads, as dashboard/app.py and dashboard/quality.py make them (sidebar, top row,
# traffic charts, the quality section, the spend tables, recent requests and one request's detail).
PAGE = """
import json, statistics, sys, time
from datetime import UTC, datetime, timedelta
from gateway.ledger import make_engine
from dashboard import queries as q, quality_queries as qq
engine = make_engine(sys.argv[1])
out = {}
for name, window in (("24 h", timedelta(hours=24)), ("7 days", timedelta(days=7)), ("all time", None)):
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for column in ("route", "tier", "api_key_id"):
            q.distinct_values(engine, column)
        q.tier_prices(engine)
        f = q.Filters(since=datetime.now(UTC) - window if window else None)
        first, last = q.time_extent(engine, f)
        qq.quality_cost(engine, f)
        q.summary(engine, f)
        qq.judged_over_time(engine, f, q.bucket_seconds(first, last, max_bars=12))
        q.spend_over_time(engine, f, q.bucket_seconds(first, last))
        q.mix(engine, f, ("tier", "route"))
        q.latency_percentiles(engine, f)
        q.router_scores(engine, f)
        qq.feedback_by_tier(engine, f); qq.check_failures(engine, f); qq.escalations(engine, f)
        qq.calibration(engine, f)
        q.spend_by(engine, f, ("api_key_id", "tier", "route", "upstream_model"))
        q.top_expensive(engine, f); q.refusals(engine, f)
        shown = q.recent(engine, f)
        if shown:
            q.request_detail(engine, shown[0]["request_id"]); qq.about_request(engine, shown[0]["request_id"])
        times.append(time.perf_counter() - t)
    out[name] = statistics.median(times)
print(json.dumps(out))
"""
# The same reads as a revision before this bench's rollups made them (one spend table, one mix a
# query; judged samples twice).
PAGE_BEFORE = (
    PAGE.replace('q.mix(engine, f, ("tier", "route"))', 'q.mix(engine, f, "tier"); q.mix(engine, f, "route")')
    .replace(
        'q.spend_by(engine, f, ("api_key_id", "tier", "route", "upstream_model"))',
        '[q.spend_by(engine, f, c) for c in ("api_key_id", "tier", "route", "upstream_model")]',
    )
    .replace(
        "qq.judged_over_time(engine, f, q.bucket_seconds",
        "qq.judged(engine, f); qq.judged_over_time(engine, f, q.bucket_seconds",
    )
)


def client_rows(n: int, seed: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """``n`` client requests over the last 30 days (some failing an answer check, some escalated),
    and, each as (table, row): the quality calls and judgements of the judged ones, feedback. In
    time order, as a gateway writes them (so a time range's rows lie together on disk, as in a
    real ledger)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ages = sorted((rng.random() ** 1.3 * 30 * 86400 for _ in range(n)), reverse=True)  # more of it lately
    tiers = {"local": (0.0, 0.0), "mid": (0.15, 0.6), "frontier": (2.5, 10.0)}
    models = {"local": "smollm2-135m", "mid": "gpt-4o-mini", "frontier": "claude-sonnet-4-5"}
    keys = [f"key_{i:02d}" for i in range(50)]
    for i in range(n):
        at = now - timedelta(seconds=ages[i])
        tier = rng.choices(list(tiers), weights=(5, 3, 2))[0]
        status, error = 200, None
        roll = rng.random()
        if roll < 0.02:
            status, error = 502, "upstream_error"
        elif roll < 0.04:
            status, error = 429, "rate_limited"
        elif roll < 0.05:
            status, error = 401, "invalid_api_key"
        answered = status < 400
        p, c = rng.randrange(50, 8000), rng.randrange(10, 800)
        read = p // 2 if answered and rng.random() < 0.3 else 0
        price = tiers[tier]
        cost = ((p - read * 0.9) * price[0] + c * price[1]) / 1e6 if answered else 0.0
        rid = f"req_{i:012d}{uuid.uuid4().hex[:8]}"
        row = LedgerRow(
            request_id=rid,
            created_at=at,
            api_key_id=None if status == 401 else rng.choice(keys),
            route=rng.choice(("auto", "auto", "cheap")),
            requested_model="auto",
            tier=None if status == 401 else tier,
            deployment=f"{tier}-a" if answered else None,
            upstream_model=models[tier] if answered else None,
            router_tier=tier,
            router_scores=json.dumps({"local": 0.4, "mid": 0.6, "frontier": 0.8}) if rng.random() < 0.6 else None,
            prompt_tokens=p if answered else 0,
            completion_tokens=c if answered else 0,
            cache_read_tokens=read,
            cost_usd=cost,
            uncached_cost_usd=(p * price[0] + c * price[1]) / 1e6 if answered else 0.0,
            frontier_cost_usd=((p - read * 0.9) * 2.5 + c * 10) / 1e6 if answered else 0.0,
            ttft_ms=rng.uniform(50, 900) if answered else None,
            latency_ms=rng.uniform(100, 9000),
            status_code=status,
            error_type=error,
            api=rng.choice(("chat", "chat", "messages", "responses")),
            session_id=f"conv-{rng.randrange(5000)}" if rng.random() < 0.2 else None,
            fallbacks='["mid-a: timeout"]' if rng.random() < 0.03 else None,
        )
        if answered and rng.random() < 0.03:  # failed an answer check
            row.checks = rng.choice(('["invalid_json"]', '["truncated"]', '["empty", "refusal"]'))
        if answered and tier != "local" and rng.random() < 0.04:  # escalated on the way here
            row.steps = json.dumps([{"tier": "local", "reasons": ["invalid_json"]}, {"tier": tier, "reasons": []}])
        columns = {name: getattr(row, name) for name in LedgerRow.__slots__}
        yield "requests", columns
        if answered and rng.random() < 0.01:
            later = at + timedelta(seconds=rng.uniform(5, 600))
            yield (
                "feedback",
                {"request_id": rid, "source": "key", "score": float(rng.random() < 0.8), "created_at": later},
            )
        if answered and rng.random() < 0.05:  # a judged sample: a shadow answer and two judge calls
            for k, purpose in enumerate(("shadow", "judge", "judge")):
                own = {**columns, "request_id": f"{rid}-{purpose}-{k}", "purpose": purpose, "route": None}
                yield "requests", own | {"parent_request_id": rid, "api_key_id": None, "session_id": None}
            cheaper = tier if tier != "frontier" else "mid"
            verdict, adequacy = rng.choice((("win", 1.0), ("tie", 1.0), ("loss", 0.0), ("tie", 0.5)))
            yield (
                "judgements",
                {
                    "request_id": rid,
                    "created_at": at + timedelta(seconds=rng.uniform(1, 30)),
                    "served_tier": tier,
                    "shadow_tier": "frontier" if tier != "frontier" else "mid",
                    "cheaper_tier": cheaper,
                    "reference_tier": "frontier",
                    "verdict": verdict,
                    "adequacy": adequacy,
                    "judge": "judge-a",
                    "sample_rate": 0.05,
                    "predicted": row.router_scores,
                    "router_tier": tier,
                },
            )


def generate(url: str, n: int) -> None:
    engine = make_engine(url)
    create_schema(engine)
    tables = {t.name: t for t in (LedgerEntry.__table__, Judgement.__table__, Feedback.__table__)}  # type: ignore[attr-defined]
    started, written = time.monotonic(), 0
    rows = client_rows(n)
    while batch := list(itertools.islice(rows, 20_000)):
        with engine.begin() as conn:
            for name, table in tables.items():
                if part := [r for t, r in batch if t == name]:
                    conn.execute(insert(table), part)
        written += len(batch)
        log(f"  {written:,} rows ({time.monotonic() - started:.0f}s)")
    with engine.begin() as conn:
        groups = rebuild(conn)
    log(f"rollups recounted: {groups:,} groups; {time.monotonic() - started:.0f}s in all")
    engine.dispose()


def _writer_rows(n: int) -> list[dict[str, Any]]:
    """As a live writer sees them: in time order, ~12,000 an hour (10M rows in 30 days)."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    mine = (r for t, r in client_rows(n, seed=2) if t == "requests")
    return [{**r, "created_at": start + timedelta(seconds=i * 0.3)} for i, r in enumerate(mine)]


def _no_stage(*_: Any) -> None:
    return None


def _no_merge(*_: Any) -> list[int]:
    return []


# name -> (what stages a batch's sums, what merges them, merge after every batch)
_VARIANTS = {
    "rows only": (_no_stage, _no_merge, False),
    "rows + rollups": (rollups.stage, rollups.merge, False),
    "merged each batch": (rollups.stage, rollups.merge, True),
}


def _write(writer: LedgerWriter, rows: list[dict[str, Any]], variant: str) -> None:
    stage, merge, each = _VARIANTS[variant]
    with mock.patch.object(rollups, "stage", stage), mock.patch.object(rollups, "merge", merge):
        batch = writer.batch_size
        for part in (rows[j : j + batch] for j in range(0, len(rows), batch)) if each else [rows]:
            writer._insert(part)
            writer._merge()


def _check_once(engine: Engine, rows: int, variant: str) -> None:
    if _VARIANTS[variant][0] is rollups.stage:
        with engine.begin() as conn:  # every row is in the rollups, once
            merged = conn.execute(select(func.sum(rollups.HOURS.c.requests))).scalar()
            assert merged == rows, (merged, rows)


def writer_rows_per_s(
    n: int, tmp: Path, batch: int, server: str | None = None, rounds: int = 3
) -> dict[str, tuple[float, float]]:
    """The ledger writer's insert rate (``batch`` rows a transaction) and this process's CPU time
    a row (the writer's, SQLite's included, a PostgreSQL server's not), with its rollups and
    without, interleaved run by run (medians of ``rounds``): on SQLite files, or with ``server`` (a
    PostgreSQL URL) on a database of its own there, made afresh for each run.

    With rollups, each batch stages its sums and the staged batches are merged into the rollups
    at the end (a writer taking rows as fast as this merges every 5 s, longer than a run), or
    after every batch (the worst case: a merge interval shorter than a batch's)."""
    rows = _writer_rows(n)
    rates: dict[str, list[float]] = {name: [] for name in _VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in _VARIANTS}
    for i in range(rounds):
        for k, name in enumerate(_VARIANTS):
            url = _fresh_database(server) if server else f"sqlite:///{tmp / f'w{batch}-{k}-{i}.db'}"
            engine = make_engine(url)
            create_schema(engine)
            writer = LedgerWriter(engine, tmp / f"spool{batch}-{k}-{i}", batch_size=batch)
            started, cpu_started = time.perf_counter(), time.process_time()
            _write(writer, rows, name)
            rates[name].append(len(rows) / (time.perf_counter() - started))
            cpu[name].append((time.process_time() - cpu_started) / len(rows) * 1e6)
            _check_once(engine, len(rows), name)
            engine.dispose()
    out = {name: (statistics.median(rates[name]), statistics.median(cpu[name])) for name in _VARIANTS}
    for name, (rate, us) in out.items():
        log(f"writer, {name}, batches of {batch}: {rate:,.0f} rows/s, {us:.1f} µs of CPU a row")
    return out


def writer_instructions(n: int, tmp: Path, batch: int, server: str | None = None) -> dict[str, float]:
    """The instructions the writer spends on a row (``batch`` rows a transaction), with its
    rollups and without, counted by valgrind's callgrind: user space, so Python's, the driver's
    and SQLite's, a PostgreSQL server's not, nor the kernel's (writes, fsync). Where the rates
    differ by ±15% from run to run on these machines, the same run counts the same within ~0.1%.
    Each variant runs in a child of its own, instrumented only while it writes."""
    out = {}
    for k, name in enumerate(_VARIANTS):
        url = _fresh_database(server) if server else f"sqlite:///{tmp / f'cg{batch}-{k}.db'}"
        dumps = tmp / f"callgrind-{batch}-{k}"
        dumps.mkdir()
        grind = ["valgrind", "--tool=callgrind", "-q", "--instr-atstart=no", f"--callgrind-out-file={dumps}/cg.%p"]
        child = subprocess.Popen(
            [*grind, PY, __file__, "--writer-child", name, str(batch), str(n), url, str(tmp / f"spool-cg{batch}-{k}")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        subprocess.run(["callgrind_control", "--instr=on", str(child.pid)], check=True, capture_output=True)
        child.stdin.write("go\n")
        child.stdin.flush()
        rows = int(child.stdout.readline().removeprefix("done "))
        subprocess.run(["callgrind_control", "-d", str(child.pid)], check=True, capture_output=True)
        child.stdin.close()
        assert child.wait() == 0
        [dump] = dumps.glob(f"cg.{child.pid}.*")
        found = re.search(r"^summary: (\d+)", dump.read_text(), re.MULTILINE)
        assert found is not None
        out[name] = int(found.group(1)) / rows
        log(f"writer, {name}, batches of {batch}: {out[name]:,.0f} instructions a row")
    return out


def _writer_child(variant: str, batch: int, n: int, url: str, spool: Path) -> None:
    """writer_instructions' child: ready, then writes when told, then done and the rows' number."""
    rows = _writer_rows(n)
    engine = make_engine(url)
    create_schema(engine)
    writer = LedgerWriter(engine, spool, batch_size=batch)
    # Warmed up first on the same rows a week before, as a writer that has run a while is: lazy
    # imports done, and its statements (one for each run of rows or groups a statement carries)
    # compiled by SQLite and cached by the driver; the first use of a long multi-row statement
    # costs more than a merge's execution of it.
    week = timedelta(days=7)
    warm = [{**r, "request_id": f"{r['request_id']}-w", "created_at": r["created_at"] - week} for r in rows]
    _write(writer, warm, variant)
    print("ready", flush=True)
    sys.stdin.readline()
    _write(writer, rows, variant)
    print(f"done {len(rows)}", flush=True)
    sys.stdin.read()
    _check_once(engine, len(warm) + len(rows), variant)


def _fresh_database(server: str, name: str = "tierwise_bench_writer") -> str:
    """An empty database ``name`` on the PostgreSQL server of ``server`` (dropped first if there)."""
    admin = create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def page_seconds(url: str, checkout: Path, page: str = PAGE) -> dict[str, float]:
    out = subprocess.run(
        [PY, "-c", page, url],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(checkout)},
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--database-url", help="default: a SQLite file under bench/out/")
    ap.add_argument("--before", default="63e2008", help="a revision whose dashboard reads raw rows ('' to skip)")
    ap.add_argument("--reuse", action="store_true", help="keep the database of an earlier run")
    ap.add_argument("--writer-rows", type=int, default=50_000, help="rows the writer's rate is measured on")
    ap.add_argument(
        "--writer-database-url",
        help="measure the writer on this PostgreSQL server (a database of its own, made and dropped) instead of SQLite",
    )
    ap.add_argument("--writer-only", action="store_true", help="only the writer's rate: no ledger, no pages")
    ap.add_argument("--writer-rounds", type=int, default=3, help="interleaved runs of each writer variant (median)")
    ap.add_argument(
        "--writer-instructions",
        action="store_true",
        help="with --writer-only: count the writer's instructions a row (callgrind) instead of timing it",
    )
    ap.add_argument("--writer-child", nargs=5, help=argparse.SUPPRESS)  # variant batch rows url spool
    args = ap.parse_args()
    if args.writer_child:
        variant, batch, n, url, spool = args.writer_child
        _writer_child(variant, int(batch), int(n), url, Path(spool))
        return 0
    OUT.mkdir(exist_ok=True)
    if args.writer_only and args.writer_instructions:
        with tempfile.TemporaryDirectory() as tmp:
            counted = {
                b: writer_instructions(args.writer_rows, Path(tmp), b, args.writer_database_url)
                for b in (500, Settings().ledger_batch_size, 10_000)
            }
        print(f"\nledger writer ({'PostgreSQL' if args.writer_database_url else 'SQLite'}), instructions a row:")
        for batch, found in counted.items():
            base = found["rows only"]
            print(
                f"  batches of {batch:>5}: "
                + " | ".join(
                    f"{name} {n:,.0f}" + ("" if name == "rows only" else f" ({base / n:.3f}x)")
                    for name, n in found.items()
                )
            )
        return 0
    if args.writer_only:
        with tempfile.TemporaryDirectory() as tmp:
            batches = (500, Settings().ledger_batch_size, 10_000)
            _print_writer(
                {
                    b: writer_rows_per_s(args.writer_rows, Path(tmp), b, args.writer_database_url, args.writer_rounds)
                    for b in batches
                },
                args.writer_database_url,
            )
        return 0
    url = args.database_url or f"sqlite:///{OUT / f'ledger-{args.rows}.db'}"
    if not args.reuse:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        log(f"writing {args.rows:,} client requests to {url}")
        generate(url, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        batches = (500, Settings().ledger_batch_size)
        writer = {
            b: writer_rows_per_s(args.writer_rows, Path(tmp), b, args.writer_database_url, args.writer_rounds)
            for b in batches
        }
        results = {"rollups (this checkout)": page_seconds(url, REPO)}
        if args.before:
            before = Path(tmp) / "before"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before], check=True
            )
            try:
                results[f"raw rows ({args.before})"] = page_seconds(url, before, PAGE_BEFORE)
            finally:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], check=False)
    print(f"\nseconds in queries per dashboard page, median of 3 ({args.rows:,} client requests, {url.split(':')[0]})")
    print(f"{'':>28} {'24 h':>8} {'7 days':>8} {'all time':>9}")
    for name, r in results.items():
        print(f"{name:>28} {r['24 h']:8.2f} {r['7 days']:8.2f} {r['all time']:9.2f}")
    _print_writer(writer, args.writer_database_url)
    return 0


def _print_writer(writer: dict[int, dict[str, tuple[float, float]]], server: str | None) -> None:
    print(
        f"\nledger writer ({'PostgreSQL' if server else 'SQLite'}, medians of the rounds), rows/s and µs of CPU a row:"
    )
    for batch, found in writer.items():
        (base, base_cpu), line = found["rows only"], [f"  batches of {batch:>5}:"]
        for name, (rate, us) in found.items():
            line.append(
                f"{name} {rate:,.0f}/s {us:.1f} µs"
                + ("" if name == "rows only" else f" ({rate / base:.2f}x, {base_cpu / us:.2f}x)")
            )
        print(" | ".join(line))


if __name__ == "__main__":
    sys.exit(main())
