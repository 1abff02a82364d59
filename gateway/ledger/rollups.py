"""Rollups of the ledger: what the dashboard's charts and totals read instead of raw rows.

One row per hour and (purpose, route, tier, upstream model, key, status, error) — what the
dashboard groups and filters by, and no more: every dimension multiplies the rows — request
count, token kinds, cost, the frontier counterfactual, what caching saved, fallbacks, and
histograms of latency and time to first token. The writer adds each batch of ledger rows to
them in the same transaction as the rows (so a batch the database refuses, or a replayed row
already written, counts in neither), and :func:`rebuild` recounts them from the rows.

Days: whole UTC days before a mark (``rollup_marks.days``) are added up once more into
``request_days``, so a month reads ~30 rows per group rather than ~720. :func:`close_days`
moves the mark (the writer calls it every ten minutes); a late row for a day already closed (a journal
replayed after an outage) is added to its day by the writer too, in the same transaction.

Dimensions are never NULL ('' stands for none): a unique key over nullable columns would let
two "none" rows of one group exist side by side, in SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import bisect
import functools
import operator
from collections.abc import Iterable, Iterator, Mapping
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
    and_,
    case,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from gateway.ledger import signal_rollups
from gateway.ledger.models import LedgerEntry
from gateway.ledger.upsert import add_sqlite

__all__ = [
    "BOUNDS_MS",
    "BUCKETS",
    "DAYS",
    "DIMENSIONS",
    "HISTOGRAMS",
    "HOURS",
    "MARKS",
    "MEASURES",
    "NULLABLE",
    "add",
    "close_days",
    "days_mark",
    "fold",
    "histogram_columns",
    "rebuild",
]

# Bucket bounds in seconds (a value v counts in the first bucket with v <= bound; the last bucket
# is +Inf): OpenTelemetry's GenAI semantic conventions' ExplicitBucketBoundaries for
# gen_ai.client.operation.duration and gen_ai.server.time_to_first_token, so the dashboard's
# percentiles are those any OTel backend would show for the same traffic.
LATENCY_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# ledger column (ms) -> (its histogram's column prefix, bounds in seconds)
HISTOGRAMS = {"latency_ms": ("latency", LATENCY_BOUNDS), "ttft_ms": ("ttft", TTFT_BOUNDS)}


def histogram_columns(metric: str) -> tuple[str, ...]:
    prefix, bounds = HISTOGRAMS[metric]
    return tuple(f"{prefix}_b{i:02d}" for i in range(len(bounds) + 1))


DIMENSIONS = ("hour", "purpose", "route", "tier", "upstream_model", "api_key_id", "status_code", "error_type")
NULLABLE = ("route", "tier", "upstream_model", "api_key_id", "error_type")
_SUMMED = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
BUCKETS = tuple(c for metric in HISTOGRAMS for c in histogram_columns(metric))
MEASURES = ("requests", *_SUMMED, "cost_usd", "frontier_cost_usd", "caching_saved_usd", "fallbacks", *BUCKETS)
_METADATA = MetaData()
_ROWS: Table = LedgerEntry.__table__  # type: ignore[attr-defined]


def _table(name: str, period: str) -> Table:
    """A rollup table: ``period`` (Unix seconds of the hour's or day's start, UTC), the groups and
    their measures."""
    counts = ("requests", *_SUMMED, "fallbacks", *BUCKETS)  # fallbacks: requests served off their path
    return Table(
        name,
        _METADATA,
        Column("id", Integer, primary_key=True),
        Column(period, BigInteger, nullable=False),
        *(Column(d, String(n), nullable=False) for d, n in _WIDTHS.items() if d != "status_code"),
        Column("status_code", Integer, nullable=False),
        *(Column(m, BigInteger, nullable=False, server_default="0") for m in counts),
        *(Column(m, Float, nullable=False) for m in ("cost_usd", "frontier_cost_usd", "caching_saved_usd")),
        Column("last_seen", DateTime(timezone=True), nullable=False),
        UniqueConstraint(period, *_WIDTHS, name=f"uq_{name}_group"),
    )


_WIDTHS = {
    "purpose": 16,
    "route": 128,
    "tier": 64,
    "upstream_model": 256,
    "api_key_id": 64,
    "status_code": 0,
    "error_type": 64,
}
HOURS = _table("request_hours", "hour")
DAYS = _table("request_days", "day")
# days: every whole day before this (Unix seconds, a UTC midnight) is in request_days
MARKS = Table(
    "rollup_marks", _METADATA, Column("name", String(32), primary_key=True), Column("value", BigInteger, nullable=False)
)
_DAY = 86400


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# ledger column -> its histogram's bucket bounds in ms, as the ledger stores latency
BOUNDS_MS = {metric: [round(b * 1000, 6) for b in bounds] for metric, (_, bounds) in HISTOGRAMS.items()}
_COLUMNS_OF = {metric: histogram_columns(metric) for metric in HISTOGRAMS}


_GROUP = operator.itemgetter(*DIMENSIONS[1:])
_COUNTED = operator.itemgetter(*_SUMMED, "cost_usd", "frontier_cost_usd")
_LATENCY, _TTFT = BOUNDS_MS["latency_ms"], BOUNDS_MS["ttft_ms"]
_AT = {name: i for i, name in enumerate((*DIMENSIONS, *MEASURES, "last_seen"))}  # a group's columns
_LATENCY_AT, _TTFT_AT = _AT[_COLUMNS_OF["latency_ms"][0]], _AT[_COLUMNS_OF["ttft_ms"][0]]
_SAVED_AT, _FALLBACKS_AT, _LAST_SEEN = _AT["caching_saved_usd"], _AT["fallbacks"], _AT["last_seen"]
_FIRST = len(DIMENSIONS)
assert _AT["requests"] == _FIRST == 8 and _AT["frontier_cost_usd"] == 15  # fold's positions


def fold(rows: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """Ledger rows (as the writer inserts them) added up by hour and group: one list per group,
    its columns in the order of DIMENSIONS, MEASURES, then last_seen. Positional, and read with
    itemgetter: it runs on the writer thread for every row, beside the insert itself."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    bucket = bisect.bisect_left
    width = _LAST_SEEN + 1
    for row in rows:
        at = row["created_at"]
        if at.tzinfo is not UTC:
            at = _utc(at)
        key = (int(at.timestamp()) // 3600 * 3600, *_GROUP(row))
        g = groups.get(key)
        if g is None:
            g = groups[key] = [*key, *[0] * (width - _FIRST - 1), at]
        elif at > g[_LAST_SEEN]:
            g[_LAST_SEEN] = at
        prompt, completion, read, write, reasoning, cost, frontier = _COUNTED(row)
        g[8] += 1  # requests, then the columns _COUNTED reads, in order
        g[9] += prompt
        g[10] += completion
        g[11] += read
        g[12] += write
        g[13] += reasoning
        g[14] += cost
        g[15] += frontier
        if (uncached := row["uncached_cost_usd"]) is not None:
            g[_SAVED_AT] += uncached - cost
        if row["fallbacks"] is not None:
            g[_FALLBACKS_AT] += 1
        if (latency := row["latency_ms"]) is not None:
            g[_LATENCY_AT + bucket(_LATENCY, latency)] += 1
        if (ttft := row["ttft_ms"]) is not None:
            g[_TTFT_AT + bucket(_TTFT, ttft)] += 1
    return _merged(_none_as_empty(groups.values()))


def _none_as_empty(groups: Iterable[list[Any]]) -> Iterator[list[Any]]:
    """Groups with '' for a dimension a row left NULL: merged where a row wrote '' instead."""
    for g in groups:
        for i in _NULLABLE_AT:
            if g[i] is None:
                g[i] = ""
        yield g


def _merged(groups: Iterable[list[Any]]) -> list[list[Any]]:
    """Groups of the same dimensions added into one."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for g in groups:
        key = tuple(g[:_FIRST])
        if (into := out.get(key)) is None:
            out[key] = g
            continue
        for i in range(_FIRST, _LAST_SEEN):
            into[i] += g[i]
        into[_LAST_SEEN] = max(into[_LAST_SEEN], g[_LAST_SEEN])
    return list(out.values())


_NULLABLE_AT = tuple(_AT[d] for d in NULLABLE)


def add(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Add ``rows`` to the rollups, in ``conn``'s transaction (the one writing the rows, which
    holds SQLite's write lock by now, so the days mark cannot move under it)."""
    rows = list(rows)
    folded = fold(rows)
    if not folded:
        return
    _upsert(conn, HOURS, folded)
    signal_rollups.add(conn, rows)
    mark = days_mark(conn, hold=True)
    if late := [g for g in folded if g[0] < mark]:
        _upsert(conn, DAYS, _by_day(late))


def _by_day(hours: Iterable[list[Any]]) -> list[list[Any]]:
    return _merged([g[0] // _DAY * _DAY, *g[1:]] for g in hours)


_MARK_LOCK = 0x7469657277697365  # "tierwise": PostgreSQL advisory lock guarding the days mark


def days_mark(conn: Connection, hold: bool = False) -> int:
    """Every whole day before this (Unix seconds) is in ``request_days``. ``hold``: on
    PostgreSQL, share the mark's lock until the transaction ends, so :func:`close_days` cannot
    move the mark while this transaction adds late rows to the days before it (on SQLite the
    transaction's write lock already excludes it)."""
    if hold and conn.dialect.name == "postgresql":
        return int(conn.execute(_HELD_MARK).one()[1] or 0)
    return int(conn.execute(_MARK).scalar() or 0)


_MARK = select(MARKS.c.value).where(MARKS.c.name == "days")
_HELD_MARK = select(func.pg_advisory_xact_lock_shared(_MARK_LOCK), _MARK.scalar_subquery())


def close_days(conn: Connection, now: datetime) -> int:
    """Add up the days that ended over an hour before ``now`` (a row's last hour may still be
    on its way) from their hours into ``request_days``, and move the mark; the mark."""
    closed = (int(now.timestamp()) - 3600) // _DAY * _DAY
    if closed <= days_mark(conn):
        return closed
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_MARK_LOCK)))
    mark = days_mark(conn)  # another replica may have closed them meanwhile
    if closed <= mark:
        return mark
    day = HOURS.c.hour // _DAY * _DAY
    dims = [HOURS.c[d] for d in DIMENSIONS[1:]]
    sums = [func.sum(HOURS.c[m]) for m in MEASURES]
    window = and_(HOURS.c.hour >= mark, HOURS.c.hour < closed)
    conn.execute(DAYS.delete().where(and_(DAYS.c.day >= mark, DAYS.c.day < closed)))
    conn.execute(
        DAYS.insert().from_select(
            ["day", *DIMENSIONS[1:], *MEASURES, "last_seen"],
            select(day, *dims, *sums, func.max(HOURS.c.last_seen)).where(window).group_by(day, *dims),
        )
    )
    _set_mark(conn, closed)
    return closed


def _set_mark(conn: Connection, value: int) -> None:
    if conn.execute(MARKS.update().where(MARKS.c.name == "days").values(value=value)).rowcount == 0:
        conn.execute(MARKS.insert().values(name="days", value=value))


def _upsert(conn: Connection, table: Table, folded: list[list[Any]]) -> None:
    """Add groups (as fold makes them) to the hourly or daily rollups."""
    period = "hour" if table is HOURS else "day"
    if conn.dialect.name != "sqlite":
        names = (period, *DIMENSIONS[1:], *MEASURES, "last_seen")
        conn.execute(_pg_upsert(table, period), [dict(zip(names, g, strict=True)) for g in folded])
        return
    stored = table.c.last_seen.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    found = [(*g[:_LAST_SEEN], stored(g[_LAST_SEEN]) if stored else g[_LAST_SEEN]) for g in folded]
    add_sqlite(
        conn, table.name, (period, *DIMENSIONS[1:], *MEASURES, "last_seen"), (period, *DIMENSIONS[1:]), MEASURES, found
    )


@functools.cache
def _pg_upsert(table: Table, period: str) -> Any:
    insert = postgresql.insert(table)
    update: dict[str, Any] = {m: table.c[m] + insert.excluded[m] for m in MEASURES}
    later = insert.excluded.last_seen > table.c.last_seen
    update["last_seen"] = case((later, insert.excluded.last_seen), else_=table.c.last_seen)
    return insert.on_conflict_do_update(index_elements=[period, *DIMENSIONS[1:]], set_=update)


def _bucket_sql(metric: str) -> list[str]:
    """The histogram's columns for ledger rows, in SQL: 1 in the value's bucket, else 0."""
    bounds, out, lower = BOUNDS_MS[metric], [], None
    for bound in [*bounds, None]:
        above = f"{metric} > {lower!r}" if lower is not None else f"{metric} IS NOT NULL"
        within = f" AND {metric} <= {bound!r}" if bound is not None else ""
        out.append(f"SUM(CASE WHEN {above}{within} THEN 1 ELSE 0 END)")
        lower = bound
    return out


def rebuild(conn: Connection, now: datetime | None = None) -> int:
    """Recount the rollups from the ledger's rows; the number of hourly rollup rows.

    Hours whose rows retention deleted keep their rollups (there is nothing left to recount them
    from), and so does the oldest hour that still has rows when older rollups exist (retention
    may have deleted part of it). The days are added up again from the hours."""
    if conn.dialect.name == "postgresql":
        hour = "(FLOOR(EXTRACT(EPOCH FROM created_at) / 3600) * 3600)::bigint"
    else:
        hour = "(CAST(strftime('%s', created_at) AS INTEGER) / 3600 * 3600)"
    if conn.dialect.name == "postgresql":  # minutes on a big ledger, not a request's seconds
        conn.execute(text("SET LOCAL statement_timeout = 0"))
    oldest = conn.execute(select(func.min(_ROWS.c.created_at))).scalar()
    oldest_row = _utc(oldest).timestamp() // 3600 * 3600 if oldest is not None else None
    oldest_rollup = conn.execute(select(func.min(HOURS.c.hour))).scalar()
    keep_before = None
    if oldest_row is not None and oldest_rollup is not None and oldest_rollup < oldest_row:
        keep_before = int(oldest_row) + 3600
    dims = ", ".join(f"COALESCE({d}, '')" if d in NULLABLE else d for d in DIMENSIONS[1:])
    histograms = [sql for metric in HISTOGRAMS for sql in _bucket_sql(metric)]
    conn.execute(HOURS.delete().where(HOURS.c.hour >= keep_before) if keep_before is not None else HOURS.delete())
    recounted = f"WHERE {hour} >= :since " if keep_before is not None else ""
    conn.execute(
        text(
            f"INSERT INTO request_hours ({', '.join(DIMENSIONS)}, {', '.join(MEASURES)}, last_seen) "
            f"SELECT {hour}, {dims}, COUNT(*), "
            + ", ".join(f"COALESCE(SUM({m}), 0)" for m in _SUMMED)
            + ", COALESCE(SUM(cost_usd), 0), COALESCE(SUM(frontier_cost_usd), 0), "
            "COALESCE(SUM(CASE WHEN uncached_cost_usd IS NOT NULL THEN uncached_cost_usd - cost_usd ELSE 0 END), 0), "
            "SUM(CASE WHEN fallbacks IS NOT NULL THEN 1 ELSE 0 END), "
            + ", ".join(histograms)
            + f", MAX(created_at) FROM requests {recounted}GROUP BY {hour}, {dims}"
        ),
        {"since": keep_before} if keep_before is not None else {},
    )
    signal_rollups.recount(conn, keep_before)
    _set_mark(conn, 0)
    conn.execute(DAYS.delete())
    close_days(conn, now or datetime.now(UTC))
    return int(conn.execute(select(func.count()).select_from(HOURS)).scalar_one())
