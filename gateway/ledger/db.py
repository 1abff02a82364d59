"""Engines for the ledger: SQLite (WAL) by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import importlib.util
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from gateway.ledger.models import LedgerEntry

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
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def create_schema(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine, tables=[LedgerEntry.__table__])  # type: ignore[attr-defined]
