"""The spend ledger in real databases: SQLite in WAL mode, the machine's PostgreSQL, and the spool."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from gateway.ledger import LedgerWriter, create_schema, make_engine
from gateway.ledger.models import LedgerEntry, LedgerRow
from tests.conftest import REPO, GatewayFactory, three_tier_policy


def _row(rid: str) -> LedgerRow:
    return LedgerRow(request_id=rid, requested_model="auto", tier="mid", cost_usd=0.001, frontier_cost_usd=0.01)


def test_sqlite_is_in_wal_mode(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream))
    openai.OpenAI(base_url=gw.v1, api_key="x").chat.completions.create(
        model="cheap", messages=[{"role": "user", "content": "x"}]
    )
    assert gw.rows()
    assert sqlite3.connect(gw.db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_ledger_end_to_end(start_gateway: GatewayFactory, fake_upstream: str, pg_url: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream), database_url=pg_url)
    raw = openai.OpenAI(base_url=gw.v1, api_key="x").chat.completions.with_raw_response.create(
        model="tier/frontier", messages=[{"role": "user", "content": "postgres please"}]
    )
    rid = raw.headers["x-tierwise-request-id"]
    engine = make_engine(pg_url)
    try:
        for _ in range(100):
            with engine.connect() as conn:
                got = conn.execute(
                    text("select tier, cost_usd, prompt_tokens from requests where request_id = :r"), {"r": rid}
                ).all()
            if got:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert got and got[0][0] == "frontier" and got[0][1] == pytest.approx(float(raw.headers["x-tierwise-cost-usd"]))
    finally:
        engine.dispose()


async def test_writer_keeps_rows_while_the_database_is_down_and_replays(tmp_path: Path) -> None:
    db = tmp_path / "good.db"
    good = make_engine(f"sqlite:///{db}")
    create_schema(good)
    # A database that cannot be opened: its directory does not exist (yet).
    missing_dir = tmp_path / "later"
    spool = tmp_path / "spool"
    writer = LedgerWriter(make_engine(f"sqlite:///{missing_dir / 'l.db'}"), spool, batch_size=10)
    ids = [uuid.uuid4().hex for _ in range(25)]
    for rid in ids:
        writer.record(_row(rid))
    await writer.flush()
    assert writer.degraded and writer.spooled == 25
    assert sum(len(p.read_bytes().splitlines()) for p in spool.glob("pending-*")) == 25
    # the database comes back: the next flush replays the segment, oldest first, nothing lost
    writer.engine = good
    writer.retry_interval_s = 0
    writer.record(_row("after"))
    await writer.flush()
    await writer.flush()
    assert writer.degraded is None
    with good.connect() as conn:
        got = [r[0] for r in conn.execute(text("select request_id from requests order by id"))]
    assert set(got) == {*ids, "after"} and len(got) == 26
    assert list(spool.glob("pending-*")) == []
    # a row replayed twice (a crash between insert and delete) is not duplicated
    (spool / "active-1-1.jsonl").write_bytes(b'{"request_id": "%s", "requested_model": "auto"}\n' % ids[0].encode())
    await writer.close()
    with good.connect() as conn:
        assert conn.execute(text("select count(*) from requests")).scalar() == 26
    assert list(spool.iterdir()) == []


async def test_a_writer_that_falls_behind_holds_bounded_memory_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    engine = make_engine(f"sqlite:///{db}")
    create_schema(engine)
    spool = tmp_path / "spool"
    writer = LedgerWriter(make_engine(f"sqlite:///{tmp_path / 'later' / 'l.db'}"), spool, max_queued=100)
    ids = [f"over-{i}" for i in range(250)]  # the writer never ran while these arrived
    for rid in ids[:150]:
        writer.record(_row(rid))
    assert len(writer._queue) == 100 and writer.queued == 150  # the other 50 are only in the journal
    await writer.flush()  # the database is away: the whole segment waits on disk
    assert writer.degraded and writer.spooled == 150 and writer.queued == 0
    for rid in ids[150:]:
        writer.record(_row(rid))
    writer.engine = engine  # back
    writer.retry_interval_s = 0
    await writer.flush()
    await writer.flush()
    with engine.connect() as conn:
        got = [r[0] for r in conn.execute(text("select request_id from requests"))]
    assert sorted(got) == sorted(ids)
    assert writer.degraded is None and writer.spooled == 0
    await writer.close()
    assert list(spool.iterdir()) == []


_CRASH = """
import asyncio, os, sys
from pathlib import Path
from gateway.ledger import LedgerWriter, make_engine
from gateway.ledger.models import LedgerEntry, LedgerRow

async def main() -> None:
    writer = LedgerWriter(make_engine(sys.argv[1]), Path(sys.argv[2]), batch_size=1000, interval_s=60)
    for i in range(50):
        writer.record(LedgerRow(request_id=f"crash-{i}", requested_model="auto"))
    os._exit(9)  # killed before the batch ever reached the database

asyncio.run(main())
"""


async def test_rows_of_a_killed_process_are_replayed_by_the_next(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    engine = make_engine(url)
    create_schema(engine)
    spool = tmp_path / "spool"
    subprocess.run([sys.executable, "-c", _CRASH, url, str(spool)], cwd=REPO, check=False)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from requests")).scalar() == 0
    writer = LedgerWriter(engine, spool)  # the next start on the same journal directory
    await writer.flush()
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from requests")).scalar() == 50
    await writer.close()
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_every_field_reads_back_as_written_in_any_batch_size(
    tmp_path: Path, database: str, ledger_url: str
) -> None:
    engine = make_engine(ledger_url)
    create_schema(engine)
    when = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    full = LedgerRow(
        request_id=f"full-{uuid.uuid4().hex}",
        requested_model="auto",
        created_at=when,
        api_key_id="k1",
        stream=True,
        usage_estimated=True,
        ttft_ms=None,
        cost_usd=0.000125,
        router_scores='{"mid": 0.9}',
        status_code=502,
        confidence=0.5,
    )
    rows = [full, *(_row(f"n-{uuid.uuid4().hex}") for _ in range(700))]  # 701 rows: runs of 512, 128, ... 1
    writer = LedgerWriter(engine, tmp_path / "spool", batch_size=1000)
    for row in rows:
        writer.record(row)
    writer.record(rows[5])  # written twice (a replay): kept once, the rest of its batch still written
    await writer.flush()
    await writer.close()
    with Session(engine) as session:
        stored = {e.request_id: e for e in session.exec(select(LedgerEntry))}
    assert len(stored) == len(rows)
    got = stored[full.request_id]
    assert {f: getattr(got, f) for f in LedgerRow.__slots__ if f != "created_at"} == {
        f: getattr(full, f) for f in LedgerRow.__slots__ if f != "created_at"
    }
    assert got.created_at.replace(tzinfo=UTC) == when
    if database == "sqlite":  # as SQLAlchemy stores it (naive UTC): the dashboard compares these strings
        with engine.connect() as conn:
            raw = conn.execute(text("select created_at from requests where request_id = :r"), {"r": full.request_id})
            assert raw.scalar() == "2026-01-02 03:04:05.123456"
