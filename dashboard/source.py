"""Which database the dashboard reads, and whether it holds a ledger: the same settings as the
gateway (``TIERWISE_DATABASE_URL``, a relative SQLite path resolved against the working
directory), and a message that names what it looked for when there is nothing to show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from gateway.settings import Settings

__all__ = ["Ledger", "open_ledger"]

_HOW = (
    "The dashboard reads the database `TIERWISE_DATABASE_URL` names, as the gateway does (default "
    "`sqlite:///tierwise.db`, a relative path resolved against the working directory): start it where "
    "the gateway runs, or give it the gateway's URL."
)


@dataclass(frozen=True)
class Ledger:
    where: str  # the file, or the URL without its password
    engine: Engine | None
    tables: frozenset[str]
    problem: str | None  # why there is nothing to show (markdown); None when the ledger is there


def open_ledger(settings: Settings, engine_for: Callable[[str], Engine]) -> Ledger:
    file = settings.sqlite_file
    where = str(file) if file else make_url(settings.database_url).render_as_string(hide_password=True)
    if file is not None and not file.is_file():
        return Ledger(where, None, frozenset(), f"No ledger at `{file}`: the file does not exist. {_HOW}")
    engine = engine_for(settings.database_url)
    try:
        found = inspect(engine)
        tables = frozenset(found.get_table_names())
        columns = {c["name"] for c in found.get_columns("requests")} if "requests" in tables else set()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        return Ledger(where, None, frozenset(), f"Cannot read the database at `{where}`: {reason}. {_HOW}")
    if "requests" not in tables:
        return Ledger(
            where,
            engine,
            tables,
            f"The database at `{where}` holds no ledger yet: the gateway creates its tables when it starts. {_HOW}",
        )
    if "purpose" not in columns:
        return Ledger(
            where,
            engine,
            tables,
            f"The ledger at `{where}` has an older schema: start the gateway once (it migrates the schema).",
        )
    return Ledger(where, engine, tables, None)
