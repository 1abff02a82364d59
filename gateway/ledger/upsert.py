"""Multi-row upserts that add to a rollup's measures, on SQLite: one statement a run of groups,
as the writer inserts its rows (executemany steps a row at a time and hands the GIL back and
forth for each: several times slower with the event loop busy)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

__all__ = ["add_sqlite"]

_PARAMETERS = 32_766  # SQLite's limit on a statement's parameters


def add_sqlite(
    conn: Connection, table: str, columns: Sequence[str], keys: Sequence[str], summed: Sequence[str], rows: list[Any]
) -> None:
    """Insert ``rows`` (each its ``columns``' values, in order) into ``table``, or where a row of
    the same ``keys`` is there, add the ``summed`` columns to it; ``last_seen``, if a column, keeps
    the later time."""
    width = len(columns)
    flat = [v for row in rows for v in row]
    done, most = 0, 1 << ((_PARAMETERS // width).bit_length() - 1)
    while done < len(rows):
        run = 1 << (min(len(rows) - done, most).bit_length() - 1)  # powers of two: few statements to cache
        sql = _sql(table, tuple(columns), tuple(keys), tuple(summed), run)
        conn.exec_driver_sql(sql, tuple(flat[done * width : (done + run) * width]))
        done += run


@functools.cache
def _sql(table: str, columns: tuple[str, ...], keys: tuple[str, ...], summed: tuple[str, ...], rows: int) -> str:
    one = "(" + ", ".join("?" * len(columns)) + ")"
    added = [f"{m} = {m} + excluded.{m}" for m in summed]
    added += ["last_seen = max(last_seen, excluded.last_seen)"] if "last_seen" in columns else []
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(added)}"
    )
