"""The spend ledger in real databases: SQLite in WAL mode, the machine's PostgreSQL, and the spool."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import openai
import pytest
from sqlalchemy import text

from gateway.ledger import LedgerWriter, create_schema, make_engine
from gateway.ledger.models import LedgerRow
from tests.conftest import GatewayFactory, three_tier_policy


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


async def test_writer_spools_when_database_is_down_and_replays(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    good = make_engine(f"sqlite:///{db}")
    create_schema(good)
    # A database that cannot be opened: its directory does not exist (yet).
    missing_dir = tmp_path / "later"
    writer = LedgerWriter(make_engine(f"sqlite:///{missing_dir / 'l.db'}"), tmp_path / "spool.jsonl", batch_size=10)
    ids = [uuid.uuid4().hex for _ in range(25)]
    for rid in ids:
        writer.record(_row(rid))
    await writer.flush()
    assert writer.degraded and writer.spooled == 25
    assert len((tmp_path / "spool.jsonl").read_text().splitlines()) == 25
    # the database comes back: the next flush replays the spool, oldest first, nothing lost
    writer.engine = good
    writer.record(_row("after"))
    await writer.flush()
    assert writer.degraded is None
    with good.connect() as conn:
        got = [r[0] for r in conn.execute(text("select request_id from requests order by id"))]
    assert set(got) == {*ids, "after"} and len(got) == 26
    # a row replayed twice (a crash between insert and unlink) is not duplicated
    (tmp_path / "spool.jsonl").write_bytes(b'{"request_id": "%s", "requested_model": "auto"}\n' % ids[0].encode())
    await writer.close()
    with good.connect() as conn:
        assert conn.execute(text("select count(*) from requests")).scalar() == 26
