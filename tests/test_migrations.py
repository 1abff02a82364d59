"""Alembic migrations on SQLite and PostgreSQL: fresh, repeated, and over a pre-migration database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from gateway.keys.models import ApiKey
from gateway.ledger import LedgerEntry, create_schema, make_engine
from gateway.ledger.db import MIGRATIONS
from gateway.quality.models import Feedback, Judgement, PolicySnapshot

HEAD = max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("0*.py"))


def _check(url: str) -> None:
    engine = make_engine(url)
    try:
        create_schema(engine)
        create_schema(engine)  # idempotent: a second replica starting up changes nothing
        names = set(inspect(engine).get_table_names())
        assert {"requests", "api_keys", "alembic_version"} <= names
        with engine.connect() as conn:
            assert conn.execute(text("select version_num from alembic_version")).scalar() == HEAD
        cols = {c["name"] for c in inspect(engine).get_columns("requests")}
        assert set(LedgerEntry.model_fields) <= cols  # the model and the migration agree
        assert set(ApiKey.model_fields) <= {c["name"] for c in inspect(engine).get_columns("api_keys")}
        for model in (Feedback, Judgement, PolicySnapshot):
            table = model.__tablename__
            assert set(model.model_fields) <= {c["name"] for c in inspect(engine).get_columns(table)}, table
    finally:
        engine.dispose()


def test_sqlite_fresh_and_repeated(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'l.db'}")


def test_postgres_fresh_and_repeated(pg_url: str) -> None:
    _check(pg_url)


def test_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    SQLModel.metadata.create_all(engine, tables=[LedgerEntry.__table__])  # type: ignore[attr-defined]
    engine.dispose()
    _check(url)


def test_processes_starting_together_migrate_one_at_a_time(tmp_path: Path) -> None:
    """``serve --workers N`` on a fresh SQLite file: every worker migrates, none trips on another."""
    import subprocess
    import sys

    from tests.conftest import REPO

    # Each process imports first and says so; once all have, they start migrating together.
    code = (
        "import sys; from gateway.ledger import create_schema, make_engine; engine = make_engine(sys.argv[1]); "
        "print('ready', flush=True); sys.stdin.readline(); create_schema(engine)"
    )
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, url],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n", p.communicate(timeout=60)[1][-1000:]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-1000:]


def test_uncached_cost_is_filled_where_it_is_known(tmp_path: Path) -> None:
    """0005 adds what a request would have cost without prompt caching: for earlier rows that
    used no cache it is their cost; for those that did it is unknown (NULL), never a guess."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        insert = (
            "INSERT INTO requests (request_id, created_at, requested_model, prompt_tokens, completion_tokens, "
            "cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, usage_estimated, "
            "cost_usd, frontier_cost_usd, latency_ms, status_code, stream, attempts, api, purpose) "
            "VALUES (:id, '2026-01-01', 'auto', 100, 10, :read, 0, 0, 0, 0, :cost, 0, 1, 200, 0, 1, 'chat', 'client')"
        )
        conn.execute(text(insert), {"id": "plain", "read": 0, "cost": 0.5})
        conn.execute(text(insert), {"id": "cached", "read": 80, "cost": 0.2})
    create_schema(engine)
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT request_id, uncached_cost_usd FROM requests")).all())
    assert got == {"plain": 0.5, "cached": None}
    engine.dispose()
