"""The ledger's hourly rollups equal a full recount of its rows, whatever way the rows came in:
batches of any size, a replayed row already written, rows of any purpose, status and group."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dashboard import queries
from gateway.ledger import LedgerWriter, create_schema, make_engine
from gateway.ledger.models import LedgerEntry, LedgerRow
from gateway.ledger.rollups import DIMENSIONS, HOURS, MEASURES, rebuild


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
                api_key_id=rng.choice([None, "key_a", "key_b"]),
                route=rng.choice([None, "auto", "cheap"]),
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
            )
        )
    return out


def _table(engine) -> dict[tuple, dict]:  # type: ignore[no-untyped-def, type-arg]
    with engine.connect() as conn:
        found = [dict(r._mapping) for r in conn.execute(select(HOURS))]
    return {tuple(r[d] for d in DIMENSIONS): {m: r[m] for m in (*MEASURES, "last_seen")} for r in found}


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
    written = _table(engine)
    with engine.begin() as conn:
        assert rebuild(conn) == len(written)
    recount = _table(engine)
    assert written.keys() == recount.keys() and len(written) > 100
    for group, measures in written.items():
        for name, value in measures.items():
            expected = recount[group][name]
            if name == "last_seen":
                assert value.replace(tzinfo=None) == expected.replace(tzinfo=None), group
            else:
                assert value == pytest.approx(expected, rel=1e-12, abs=1e-12), (group, name)
    assert sum(m["requests"] for m in written.values()) == len(rows)


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
    oldest = min(r.created_at for r in rows)
    assert first == oldest.replace(minute=0, second=0, microsecond=0) and last is not None  # its hour, from the rollups
    assert queries.summary(engine, queries.Filters()).requests == sum(1 for r in rows if r.purpose == "client")
