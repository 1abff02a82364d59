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
    import time

    from tests.conftest import REPO

    # Each process imports first, then all start migrating at the same instant.
    code = (
        "import sys, time; from gateway.ledger import create_schema, make_engine; engine = make_engine(sys.argv[1]); "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); create_schema(engine)"
    )
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
        start = str(time.time() + 6)
        procs = [
            subprocess.Popen([sys.executable, "-c", code, url, start], cwd=REPO, stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()[-1000:]
