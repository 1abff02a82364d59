"""Multi-row upserts that add to a rollup's measures: one statement a run of groups, never one a
group. An executemany steps a row at a time: on SQLite it hands the GIL back and forth for each
(several times slower with the event loop busy); on PostgreSQL SQLAlchemy's and psycopg's work per
row was most of the ~110 µs a group cost. PostgreSQL takes the groups as one jsonb parameter,
so the statement is short and the same whatever their number: psycopg parses a statement's
placeholders in Python and caches only short ones (multi-row VALUES was slower still), and dumps
array parameters in Python (unnest of typed arrays: ~3x jsonb's time)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect

__all__ = ["add"]

_PARAMETERS = 32_766  # SQLite's limit on a statement's parameters


def add(
    conn: Connection, table: Table, columns: Sequence[str], keys: Sequence[str], summed: Sequence[str], rows: list[Any]
) -> None:
    """Insert ``rows`` (each its ``columns``' values, in order, no two of the same ``keys``) into
    ``table``, or where a row of the same ``keys`` is there, add the ``summed`` columns to it;
    ``last_seen``, if a column, keeps the later time."""
    shape = (table, tuple(columns), tuple(keys), tuple(summed))
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(_json_sql(conn.dialect, *shape), (orjson.dumps(rows).decode(),))
        return
    width = len(columns)
    flat = list(itertools.chain.from_iterable(rows))
    done, most = 0, 1 << ((_PARAMETERS // width).bit_length() - 1)
    while done < len(rows):
        run = 1 << (min(len(rows) - done, most).bit_length() - 1)  # powers of two: few statements to cache
        conn.exec_driver_sql(_values_sql(*shape, run), tuple(flat[done * width : (done + run) * width]))
        done += run


def _on_conflict(
    table: Table, columns: tuple[str, ...], keys: tuple[str, ...], summed: tuple[str, ...], later: str
) -> str:
    added = [f"{m} = {table.name}.{m} + excluded.{m}" for m in summed]
    added += [f"last_seen = {later}({table.name}.last_seen, excluded.last_seen)"] if "last_seen" in columns else []
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(added)}"


@functools.cache
def _values_sql(
    table: Table, columns: tuple[str, ...], keys: tuple[str, ...], summed: tuple[str, ...], rows: int
) -> str:
    one = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {', '.join([one] * rows)} " + _on_conflict(
        table, columns, keys, summed, "max"
    )


@functools.cache
def _json_sql(
    dialect: Dialect, table: Table, columns: tuple[str, ...], keys: tuple[str, ...], summed: tuple[str, ...]
) -> str:
    values = ", ".join(f"(r->>{i})::{table.c[c].type.compile(dialect=dialect)}" for i, c in enumerate(columns))
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {values} FROM jsonb_array_elements(%s::jsonb) AS r "
        + _on_conflict(table, columns, keys, summed, "greatest")
    )
