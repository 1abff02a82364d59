"""The ledger's rollups equal a full recount of its rows, whatever way the rows came in: batches
of any size, a replayed row already written, rows of any purpose, status and group, a late row
for a day already added up; and the dashboard's figures read off them equal the rows'."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text

from dashboard import queries
from gateway.ledger import LedgerWriter, create_schema, make_engine
from gateway.ledger.models import LedgerEntry, LedgerRow
from gateway.ledger.rollups import BOUNDS_MS, BUCKETS, DAYS, HOURS, days_mark, merge, rebuild, stage
from gateway.ledger.signal_rollups import (
    CHECKS,
    FEEDBACK,
    JUDGED,
    QUALITY,
    STEPS,
    add_judgement,
    columns,
    recount_feedback,
    recount_judgements,
)
from gateway.quality.feedback import find_request, record_feedback
from gateway.quality.models import Judgement
from tests.dashboard_data import _full, build


def _rows(n: int, seed: int) -> list[LedgerRow]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 30, 22, 30, tzinfo=UTC)
    out = []
    for i in range(n):
        cached = rng.random() < 0.5
        cost = rng.choice([0.0, 0.0001, 0.0123, 1.5e-7])
        out.append(
            LedgerRow(
                request_id=f"r-{seed}-{i}-{uuid.uuid4().hex[:8]}",
                requested_model="auto",
                created_at=start + timedelta(minutes=rng.randrange(0, 5 * 60)),  # across 6 hours and a day
                api_key_id=rng.choice([None, "", "key_a", "key_b"]),  # NULL and '': one group
                route=rng.choice([None, "", "auto", "cheap"]),
                tier=rng.choice([None, "local", "mid", "frontier"]),
                deployment=rng.choice([None, "mid-a", "frontier-a"]),
                upstream_model=rng.choice([None, "gpt-4o-mini", "claude-haiku-4-5"]),
                purpose=rng.choice(["client", "client", "shadow", "judge", "probe"]),
                api=rng.choice(["chat", "messages", "responses", "embeddings"]),
                status_code=rng.choice([200, 200, 200, 429, 502, 499]),
                error_type=rng.choice([None, None, "upstream_timeout", "rate_limited"]),
                prompt_tokens=rng.randrange(0, 5000),
                completion_tokens=rng.randrange(0, 800),
                cache_read_tokens=rng.randrange(0, 4000) if cached else 0,
                cache_write_tokens=rng.randrange(0, 500) if cached else 0,
                reasoning_tokens=rng.randrange(0, 100),
                cost_usd=cost,
                frontier_cost_usd=cost * 10,
                uncached_cost_usd=rng.choice([None, cost * 1.5]),
                fallbacks=rng.choice([None, '["mid-a: timeout"]']),
                latency_ms=rng.choice([5.0, 10.0, 10.5, 640.0, 3000.0, 99_000.0, rng.uniform(1, 90_000)]),
                ttft_ms=rng.choice([None, 0.5, 1.0, 250.0, 12_000.0, rng.uniform(1, 9000)]),
                checks=rng.choice([None, None, '["invalid_json"]', '["empty", "refusal"]', "[]", "not json"]),
                steps=rng.choice([None, None, _STEPS, '[{"tier": null}, {"tier": "mid", "reasons": []}]']),
            )
        )
    clients: list[LedgerRow] = []
    for r in out:  # quality calls: of a client request written before them, or of one never held
        if r.purpose == "client":
            clients.append(r)
        elif r.purpose in ("shadow", "judge"):
            r.parent_request_id = rng.choice(clients).request_id if clients and rng.random() < 0.9 else "req-gone"
    return out


_STEPS = (
    '[{"tier": "local", "reasons": ["invalid_json", "empty"]}, {"tier": "mid"}, {"tier": "frontier", "reasons": []}]'
)


def _table(engine, table=HOURS) -> dict[tuple, dict]:  # type: ignore[no-untyped-def, type-arg]
    dims, measures = columns(table)
    with engine.connect() as conn:
        found = [dict(r._mapping) for r in conn.execute(select(table))]
    return {tuple(r[d] for d in dims): {m: r[m] for m in measures} for r in found}


def _signals(engine) -> list[dict[tuple, dict]]:  # type: ignore[no-untyped-def, type-arg]
    return [_table(engine, t) for t in (CHECKS, STEPS, QUALITY)]


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_rollups_equal_a_full_recount(tmp_path: Path, ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    create_schema(engine)
    rows = _rows(1500, seed=7)
    writer = LedgerWriter(engine, tmp_path / "spool", batch_size=128)
    for row in rows[:900]:
        writer.record(row)
    await writer.flush()
    for row in [*rows[900:], rows[3], rows[950]]:  # two replayed rows, already written: counted once
        writer.record(row)
    await writer.flush()
    await writer.close()
    written, signals = _table(engine), _signals(engine)
    with engine.begin() as conn:
        assert rebuild(conn) == len(written)
    recount = _table(engine)
    assert written.keys() == recount.keys() and len(written) > 100
    _same(written, recount)
    assert sum(m["requests"] for m in written.values()) == len(rows)
    assert sum(sum(m[b] for b in BUCKETS if b.startswith("latency")) for m in written.values()) == len(rows)
    for mine, theirs in zip(signals, _signals(engine), strict=True):
        assert mine.keys() == theirs.keys() and mine
        _same(mine, theirs)
    checks, steps, calls = signals
    # 1 in 6 rows failed checks (half of them answered clients with a tier; "[]" and bad JSON fail none)
    assert {g[3] for g in checks} == {"", "invalid_json", "empty", "refusal"}
    assert {g[3:] for g in steps} >= {("", ""), ("local", "invalid_json"), ("mid", "(unspecified)"), ("(unknown)", "")}
    assert not any(g[3] == "frontier" and g[4] for g in steps)  # the last step moved on from nothing
    assert sum(m["calls"] for m in calls.values()) == sum(r.purpose in ("shadow", "judge") for r in rows)
    gone = sum(m["calls"] for g, m in calls.items() if g[1:3] == ("", ""))
    assert 0 < gone < sum(m["calls"] for m in calls.values())  # "req-gone"'s count in their own hour


def _same(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    for group, measures in a.items():
        for name, value in measures.items():
            expected = b[group][name]
            if name == "last_seen":
                assert value.replace(tzinfo=None) == expected.replace(tzinfo=None), group
            else:
                assert value == pytest.approx(expected, rel=1e-12, abs=1e-12), (group, name)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_sums_staged_by_a_writer_that_died_are_merged_once_by_another(tmp_path: Path, ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    create_schema(engine)
    rows = _rows(600, seed=13)
    dying = LedgerWriter(engine, tmp_path / "a", batch_size=100, merge_interval_s=3600)
    for row in rows[:200]:
        dying.record(row)
    await dying.flush()  # the first flush merges what it wrote
    for row in rows[200:450]:
        dying.record(row)
    await dying.flush()  # staged with the rows, not merged yet: the process dies here (kill -9)
    assert _requests(engine) == 200  # the rollups lag the rows by the merge interval
    with engine.begin() as conn:  # an operator's recount meanwhile: the staged sums are in it once
        rebuild(conn)
    assert _requests(engine) == 450
    for row in rows[450:]:
        dying.record(row)
    await dying.flush()
    sibling = LedgerWriter(engine, tmp_path / "b")  # another replica, or the next start
    await sibling.close()
    merged = _table(engine)
    assert _requests(engine) == len(rows)
    with engine.begin() as conn:
        rebuild(conn)
    _same(merged, _table(engine))
    assert merged.keys() == _table(engine).keys()


def test_a_merge_rolled_back_leaves_the_sums_it_was_given_as_they_were(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    create_schema(engine)
    rows = [{n: getattr(r, n) for n in LedgerRow.__slots__} for r in _rows(300, seed=19)]
    at = datetime(2026, 12, 1, 10, 5, tzinfo=UTC)
    for i, row in enumerate(rows):  # one group in every batch: merging them adds into one list
        row |= {"created_at": at + timedelta(seconds=i), "purpose": "client", "status_code": 200, "error_type": None}
        row |= {"route": "auto", "tier": "mid", "upstream_model": "m", "api_key_id": "k", "parent_request_id": None}
    known = {}
    with engine.begin() as conn:  # rows as the writer writes them, each batch's sums staged beside them
        for part in (rows[:100], rows[100:200], rows[200:]):
            conn.execute(insert(LedgerEntry.__table__), part)  # type: ignore[attr-defined]
            staged = stage(conn, part)
            assert staged is not None
            known[staged[0]] = staged[1]
    with engine.connect() as conn:  # a merge whose transaction fails after adding them up
        conn.begin()
        assert len(merge(conn, known=known)) == 3
        conn.rollback()
    with engine.begin() as conn:
        assert len(merge(conn, known=known)) == 3
    merged = _table(engine)
    with engine.begin() as conn:
        rebuild(conn)
    _same(merged, _table(engine))
    assert merged.keys() == _table(engine).keys()


def _requests(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(HOURS.c.requests), 0))).scalar_one())


def test_replicas_merging_at_once_add_each_batch_once(tmp_path: Path, pg_url: str) -> None:
    engine = make_engine(pg_url)
    create_schema(engine)
    rows = _rows(400, seed=17)
    LedgerWriter(engine, tmp_path / "spool", batch_size=100)._insert(
        [{n: getattr(r, n) for n in LedgerRow.__slots__} for r in rows]
    )
    first = engine.connect()
    first.begin()
    assert len(merge(first)) == 4  # taken, not committed: the batches stay locked
    second: list[int] = []
    racing = threading.Thread(target=lambda: second.append(_merge_in(engine)))
    racing.start()
    with engine.connect() as watch:  # until the second replica's merge waits on the first's locks
        waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = :db")
        while not watch.execute(waiting, {"db": engine.url.database}).scalar_one():
            watch.rollback()
    first.commit()
    first.close()
    racing.join(timeout=30)
    assert second == [0]  # the batches the first took are gone, not added twice
    assert _requests(engine) == len(rows)


def _merge_in(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return len(merge(conn))


async def test_the_rebuild_command_repairs_the_rollups(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    engine = make_engine(url)
    create_schema(engine)
    writer = LedgerWriter(engine, tmp_path / "spool")
    for row in _rows(300, seed=3):
        writer.record(row)
    await writer.close()
    written = _table(engine)
    with engine.begin() as conn:
        conn.execute(HOURS.delete())
    env = {**os.environ, "TIERWISE_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "ledger", "rebuild-rollups"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(written):,} groups" in done.stdout
    assert _table(engine).keys() == written.keys()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_retention_deletes_old_rows_and_keeps_their_rollups(tmp_path: Path, ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    create_schema(engine)
    now = datetime.now(UTC)  # (the writer's hourly pruning at close reads the real clock too)
    rows = _rows(400, seed=5)
    for i, row in enumerate(rows):  # one every 15 minutes, none on the boundary: four days and a bit
        row.created_at = now - timedelta(minutes=15 * i + 7.5)
    writer = LedgerWriter(engine, tmp_path / "spool")
    for row in rows:
        writer.record(row)
    await writer.close()
    before = _table(engine)
    keeping = LedgerWriter(engine, tmp_path / "spool", retention_days=2)
    assert await keeping.prune(now) == sum(1 for r in rows if r.created_at < now - timedelta(days=2))
    await keeping.close()
    with engine.connect() as conn:
        kept = conn.execute(select(LedgerEntry.created_at)).scalars().all()  # type: ignore[call-overload]
    assert len(kept) == sum(1 for r in rows if r.created_at >= now - timedelta(days=2)) > 0
    assert _table(engine) == before  # the dashboard's totals still count every request
    first, last = queries.time_extent(engine, queries.Filters())
    oldest = min(r.created_at for r in rows if r.purpose == "client")
    assert first == oldest.replace(minute=0, second=0, microsecond=0) and last is not None  # its hour, from the rollups
    assert queries.summary(engine, queries.Filters()).requests == sum(1 for r in rows if r.purpose == "client")


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_whole_days_are_added_up_and_late_rows_reach_them(tmp_path: Path, ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    create_schema(engine)
    now = datetime.now(UTC)
    rows = _rows(700, seed=11)
    for i, row in enumerate(rows):  # one every 11 minutes: five days and a bit, newest first
        row.created_at = now - timedelta(minutes=11 * i + 3)
    writer = LedgerWriter(engine, tmp_path / "spool")
    for row in rows[:400]:
        writer.record(row)
    await writer.flush()  # the first flush adds up the days that ended (an hour ago or more)
    with engine.connect() as conn:
        mark = days_mark(conn)
    assert mark == (int(now.timestamp()) - 3600) // 86400 * 86400
    for row in rows[400:]:  # late: a journal replayed after an outage, for days already added up
        writer.record(row)
    await writer.close()
    days = _table(engine, DAYS)
    assert days and all(g[0] < mark and g[0] % 86400 == 0 for g in days)
    with engine.begin() as conn:
        rebuild(conn, now)
    _same(days, _table(engine, DAYS))
    assert days.keys() == _table(engine, DAYS).keys()

    # Read through the days: the dashboard's figures equal the rows' own.
    clients = [r for r in rows if r.purpose == "client"]
    assert queries.summary(engine, queries.Filters()).requests == len(clients)
    per_day: dict[int, float] = {}
    for r in clients:
        if r.tier is not None:
            day = int(r.created_at.timestamp()) // 86400 * 86400
            per_day[day] = per_day.get(day, 0.0) + r.cost_usd
    found: dict[int, float] = {}
    for r in queries.spend_over_time(engine, queries.Filters(), 86400):
        found[int(r["bucket"])] = found.get(int(r["bucket"]), 0.0) + r["spend_usd"]
    assert found == pytest.approx(per_day)
    week = queries.Filters(since=now - timedelta(days=3, minutes=7))  # whole days, hours and rows
    assert queries.summary(engine, week).requests == sum(1 for r in clients if r.created_at >= week.since)
    first, _ = queries.time_extent(engine, queries.Filters())
    assert first == min(r.created_at for r in clients)


def test_latency_percentiles_read_the_histograms_as_prometheus_does(tmp_path: Path) -> None:
    """Linear within the rank's bucket (OpenTelemetry's GenAI bounds), so never outside the
    bucket that holds the true percentile; a rank in the open last bucket reads its lower bound."""
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    create_schema(engine)
    rng = random.Random(3)
    rows = _rows(400, seed=9)
    for r in rows:
        r.purpose, r.status_code, r.tier, r.latency_ms = "client", 200, "mid", rng.lognormvariate(7.5, 1.0)
        r.ttft_ms = 200_000.0  # past the last bound (10 s)
    writer_rows = [{name: getattr(r, name) for name in LedgerRow.__slots__} for r in rows]
    with engine.begin() as conn:
        conn.execute(LedgerEntry.__table__.insert(), writer_rows)  # type: ignore[attr-defined]
        rebuild(conn)
    (found,) = queries.latency_percentiles(engine, queries.Filters())
    ordered = sorted(r.latency_ms for r in rows)
    bounds = [0.0, *BOUNDS_MS["latency_ms"], float("inf")]
    for p in (0.5, 0.95):
        true = ordered[int(p * len(ordered)) - 1]
        i = next(i for i, b in enumerate(bounds) if true <= b)
        assert bounds[i - 1] <= found[f"latency_p{int(p * 100)}_ms"] <= bounds[i], p
    assert found["ttft_p50_ms"] == found["ttft_p95_ms"] == 10_000.0


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_judgements_counted_as_the_sampler_writes_them_equal_a_recount(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    create_schema(engine)
    tables = build(200, quality=True)
    requests = {r["request_id"]: r for r in tables["requests"]}
    with engine.begin() as conn:
        conn.execute(insert(LedgerEntry.__table__), _full(LedgerEntry, tables["requests"]))  # type: ignore[attr-defined]
    for j in _full(Judgement, tables["judgements"]):  # one transaction each, as the sampler writes
        r = requests[j["request_id"]]
        with engine.begin() as conn:
            conn.execute(insert(Judgement.__table__), [j])  # type: ignore[attr-defined]
            add_judgement(conn, j | {"request_at": r["created_at"], "route": r["route"], "tier": r["tier"]})
    written = _table(engine, JUDGED)
    with engine.begin() as conn:
        recount_judgements(conn)
    assert written.keys() == _table(engine, JUDGED).keys() and len(written) > 5
    _same(written, _table(engine, JUDGED))
    assert sum(m["n"] for m in written.values()) == len(tables["judgements"])
    assert {g[5] for g in written} > {-1}  # calibration bins, and samples without a prediction


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_feedback_counted_as_it_is_given_and_replaced_equals_a_recount(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    create_schema(engine)
    tables = build(120)
    with engine.begin() as conn:
        conn.execute(insert(LedgerEntry.__table__), _full(LedgerEntry, tables["requests"]))  # type: ignore[attr-defined]
    answered = [r["request_id"] for r in tables["requests"] if r["status_code"] < 400][:40]
    for i, request_id in enumerate(answered):
        found = find_request(engine, request_id)
        assert found is not None
        assert record_feedback(engine, request_id, "key", (1.0, 0.0, 0.75)[i % 3], None, found)
        if i % 4 == 0:  # changed their mind: the verdict is replaced, its counts move
            assert not record_feedback(engine, request_id, "key", 0.25, None, found)
    written = _table(engine, FEEDBACK)
    with engine.begin() as conn:
        recount_feedback(conn)
    _same(written, _table(engine, FEEDBACK))
    assert written.keys() == _table(engine, FEEDBACK).keys()
    assert sum(m["n"] for m in written.values()) == len(answered)
    assert sum(m["score"] for m in written.values()) == pytest.approx(
        sum(0.25 if i % 4 == 0 else (1.0, 0.0, 0.75)[i % 3] for i in range(len(answered)))
    )
