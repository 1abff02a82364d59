"""Engines for the ledger: SQLite (WAL) by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

__all__ = ["create_schema", "make_engine", "normalise_url"]


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here unless psycopg2 is what is installed."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    elif url.startswith("postgresql"):
        # A server that accepts connections but never answers must not hang the ledger writer or a
        # key lookup: bounded connect, statement and pool waits.
        kwargs["connect_args"] = {"connect_timeout": 3, "options": "-c statement_timeout=5000"}
        kwargs["pool_timeout"] = 5
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


class NoLedger(Exception):
    """There is no ledger to read where the settings point (the message names the database)."""


def read_engine(url: str) -> Engine:
    """An engine on an existing ledger, for commands that only read it: a SQLite file that does
    not exist is an error naming it, never an empty database created in passing."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not Path(url.removeprefix(prefix)).is_file():
        file = Path(url.removeprefix(prefix)).resolve()
        raise NoLedger(
            f"no ledger at {file}: the file does not exist (TIERWISE_DATABASE_URL names the gateway's "
            "database; a relative path is resolved against the working directory)"
        )
    return make_engine(url)


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = 7_264_190_311  # pg advisory lock: replicas starting together migrate one at a time


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest schema with Alembic (SQLite and PostgreSQL alike).

    Processes starting together (replicas, ``--workers N``) migrate one at a time: under a
    Postgres advisory lock, or an exclusive lock on a file beside the SQLite database."""
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
            # A migration may recount the rollups from every row: minutes on a big ledger, not
            # the seconds a request's statement gets.
            conn.execute(text("SET LOCAL statement_timeout = 0"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
