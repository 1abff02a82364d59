"""Hourly rollups of the ledger: what the dashboard's charts and totals read instead of raw rows.

One row per hour and (purpose, route, tier, upstream model, key, status, error) — what the
dashboard groups and filters by, and no more: every dimension multiplies the rows — request
count, token kinds, cost, the frontier counterfactual, what caching saved, fallbacks. The writer
adds each batch of ledger rows to them in the same transaction as the rows (so a batch the
database refuses, or a replayed row already written, counts in neither), and
:func:`rebuild` recounts them from the rows.

Dimensions are never NULL ('' stands for none): a unique key over nullable columns would let
two "none" rows of one group exist side by side, in SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    case,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

__all__ = ["DIMENSIONS", "HOURS", "MEASURES", "NULLABLE", "add", "fold", "rebuild"]

HOURS = Table(
    "request_hours",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("hour", BigInteger, nullable=False),  # Unix seconds of the hour's start, UTC
    Column("purpose", String(16), nullable=False),
    Column("route", String(128), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("upstream_model", String(256), nullable=False),
    Column("api_key_id", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("error_type", String(64), nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("frontier_cost_usd", Float, nullable=False),
    Column("caching_saved_usd", Float, nullable=False),  # uncached cost minus cost, where known
    Column("fallbacks", BigInteger, nullable=False),  # requests served off their path
    Column("last_seen", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "hour", "purpose", "route", "tier", "upstream_model", "api_key_id", "status_code", "error_type",
        name="uq_request_hours_group",
    ),
)  # fmt: skip

DIMENSIONS = ("hour", "purpose", "route", "tier", "upstream_model", "api_key_id", "status_code", "error_type")
NULLABLE = ("route", "tier", "upstream_model", "api_key_id", "error_type")
_SUMMED = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
MEASURES = ("requests", *_SUMMED, "cost_usd", "frontier_cost_usd", "caching_saved_usd", "fallbacks")


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def fold(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Ledger rows (as the writer inserts them) added up by hour and group."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        at = _utc(row["created_at"])
        hour = int(at.timestamp()) // 3600 * 3600
        key = (
            hour,
            row["purpose"],
            row["route"] or "",
            row["tier"] or "",
            row["upstream_model"] or "",
            row["api_key_id"] or "",
            row["status_code"],
            row["error_type"] or "",
        )
        g = groups.get(key)
        if g is None:
            g = groups[key] = dict(zip(DIMENSIONS, key, strict=True)) | dict.fromkeys(MEASURES, 0) | {"last_seen": at}
        g["requests"] += 1
        for name in _SUMMED:
            g[name] += row[name]
        g["cost_usd"] += row["cost_usd"]
        g["frontier_cost_usd"] += row["frontier_cost_usd"]
        if row["uncached_cost_usd"] is not None:
            g["caching_saved_usd"] += row["uncached_cost_usd"] - row["cost_usd"]
        g["fallbacks"] += row["fallbacks"] is not None
        g["last_seen"] = max(g["last_seen"], at)
    return list(groups.values())


def add(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Add ``rows`` to the rollups, in ``conn``'s transaction (the one writing the rows)."""
    folded = fold(rows)
    if not folded:
        return
    if conn.dialect.name == "sqlite":
        _add_sqlite(conn, folded)
        return
    insert = postgresql.insert(HOURS)
    update: dict[str, Any] = {m: HOURS.c[m] + insert.excluded[m] for m in MEASURES}
    later = insert.excluded.last_seen > HOURS.c.last_seen
    update["last_seen"] = case((later, insert.excluded.last_seen), else_=HOURS.c.last_seen)
    conn.execute(insert.on_conflict_do_update(index_elements=list(DIMENSIONS), set_=update), folded)


_COLUMNS = (*DIMENSIONS, *MEASURES, "last_seen")
_MAX_RUN = 1024  # groups per statement: 1,024 x 21 values stays under SQLite's 32,766 parameters


def _add_sqlite(conn: Connection, folded: list[dict[str, Any]]) -> None:
    """Multi-row upserts, as the writer inserts its rows (executemany steps a row at a time and
    hands the GIL back and forth for each: several times slower with the event loop busy)."""
    stored = HOURS.c.last_seen.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    values = [g[c] if c != "last_seen" or stored is None else stored(g[c]) for g in folded for c in _COLUMNS]
    width, done = len(_COLUMNS), 0
    while done < len(folded):
        run = 1 << (min(len(folded) - done, _MAX_RUN).bit_length() - 1)
        conn.exec_driver_sql(_upsert_sql(run), tuple(values[done * width : (done + run) * width]))
        done += run


@functools.cache
def _upsert_sql(groups: int) -> str:
    one = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    added = ", ".join(f"{m} = {m} + excluded.{m}" for m in MEASURES)
    return (
        f"INSERT INTO request_hours ({', '.join(_COLUMNS)}) VALUES {', '.join([one] * groups)} "
        f"ON CONFLICT ({', '.join(DIMENSIONS)}) DO UPDATE SET {added}, "
        "last_seen = max(last_seen, excluded.last_seen)"
    )


def rebuild(conn: Connection) -> int:
    """Recount every rollup from the ledger's rows; the number of rollup rows."""
    if conn.dialect.name == "postgresql":
        hour = "(FLOOR(EXTRACT(EPOCH FROM created_at) / 3600) * 3600)::bigint"
    else:
        hour = "(CAST(strftime('%s', created_at) AS INTEGER) / 3600 * 3600)"
    dims = ", ".join(f"COALESCE({d}, '')" if d in NULLABLE else d for d in DIMENSIONS[1:])
    conn.execute(HOURS.delete())
    conn.execute(
        text(
            f"INSERT INTO request_hours ({', '.join(DIMENSIONS)}, {', '.join(MEASURES)}, last_seen) "
            f"SELECT {hour}, {dims}, COUNT(*), "
            + ", ".join(f"COALESCE(SUM({m}), 0)" for m in _SUMMED)
            + ", COALESCE(SUM(cost_usd), 0), COALESCE(SUM(frontier_cost_usd), 0), "
            "COALESCE(SUM(CASE WHEN uncached_cost_usd IS NOT NULL THEN uncached_cost_usd - cost_usd ELSE 0 END), 0), "
            "SUM(CASE WHEN fallbacks IS NOT NULL THEN 1 ELSE 0 END), MAX(created_at) "
            f"FROM requests GROUP BY {hour}, {dims}"
        )
    )
    return int(conn.execute(text("SELECT COUNT(*) FROM request_hours")).scalar_one())
