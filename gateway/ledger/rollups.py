"""Rollups of the ledger: what the dashboard's charts and totals read instead of raw rows.

One row per hour and (purpose, route, tier, upstream model, key, status, error) — what the
dashboard groups and filters by, and no more: every dimension multiplies the rows — request
count, token kinds, cost, the frontier counterfactual, what caching saved, fallbacks, and
histograms of latency and time to first token.

The writer stages each batch's sums (folded in Python, signals too) in ``rollup_pending``, in
the transaction that writes its rows, and every few seconds :func:`merge` adds the staged
batches to the rollups at once: a group recurs batch after batch, and the upserts were most of
what the rollups cost the writer. So a batch the database refuses, or a replayed row already
written, counts in neither, and the rollups lag the rows by the merge interval. :func:`rebuild`
recounts them from the rows.

Days: whole UTC days before a mark (``rollup_marks.days``) are added up once more into
``request_days``, so a month reads ~30 rows per group rather than ~720. :func:`close_days`
moves the mark (the writer calls it every ten minutes); a late row for a day already closed (a journal
replayed after an outage) is added to its day by the merge too, in the same transaction.

Dimensions are never NULL ('' stands for none): a unique key over nullable columns would let
two "none" rows of one group exist side by side, in SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import bisect
import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection, Dialect

from gateway.ledger import signal_rollups, upsert
from gateway.ledger.models import LedgerEntry

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
    "PENDING",
    "Staged",
    "close_days",
    "days_mark",
    "fold",
    "histogram_columns",
    "merge",
    "rebuild",
    "stage",
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
# A batch's rollup sums (folded hours and signals, JSON), written with its rows; see merge.
PENDING = Table(
    "rollup_pending",
    _METADATA,
    Column("id", Integer, primary_key=True),
    Column("sums", LargeBinary, nullable=False),
)
_STAGE = PENDING.insert().returning(PENDING.c.id)
_DAY = 86400


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# ledger column -> its histogram's bucket bounds in ms, as the ledger stores latency
BOUNDS_MS = {metric: [round(b * 1000, 6) for b in bounds] for metric, (_, bounds) in HISTOGRAMS.items()}
_COLUMNS_OF = {metric: histogram_columns(metric) for metric in HISTOGRAMS}


# A row's group (DIMENSIONS but the hour), what fold adds up of it and its quality signals, in one call.
_READ = operator.itemgetter(
    *DIMENSIONS[1:], "created_at", *_SUMMED, "cost_usd", "frontier_cost_usd", "uncached_cost_usd", "fallbacks",
    "latency_ms", "ttft_ms", "checks", "steps", "parent_request_id",
)  # fmt: skip
_LATENCY, _TTFT = BOUNDS_MS["latency_ms"], BOUNDS_MS["ttft_ms"]
_AT = {name: i for i, name in enumerate((*DIMENSIONS, *MEASURES, "last_seen"))}  # a group's columns
_LATENCY_AT, _TTFT_AT = _AT[_COLUMNS_OF["latency_ms"][0]], _AT[_COLUMNS_OF["ttft_ms"][0]]
_SAVED_AT, _FALLBACKS_AT, _LAST_SEEN = _AT["caching_saved_usd"], _AT["fallbacks"], _AT["last_seen"]
_FIRST = len(DIMENSIONS)
_KEY = operator.itemgetter(*range(_FIRST))  # a group's dimensions
assert _AT["requests"] == _FIRST == 8 and _AT["frontier_cost_usd"] == 15  # fold's positions
_HOUR = timedelta(hours=1)


def fold(rows: Iterable[Mapping[str, Any]]) -> tuple[list[list[Any]], list[Mapping[str, Any]]]:
    """Ledger rows (as the writer inserts them) added up by hour and group: a list per group,
    its columns in the order of DIMENSIONS, MEASURES, then last_seen (rows that differ only in
    NULL or '' for a dimension come as two lists: the merge adds groups up by key); and the
    rows that carry a quality signal (checks, steps or a parent request: see
    ``signal_rollups.sums``). Positional, one itemgetter call a row and the hour's bounds kept
    while rows stay in it: it runs on the writer thread for every row, beside the insert itself."""
    by_hour: dict[int, dict[tuple[Any, ...], list[Any]]] = {}
    groups: dict[tuple[Any, ...], list[Any]] = {}
    signalled = []
    start = end = datetime.max.replace(tzinfo=UTC)
    hour = 0
    bucket = bisect.bisect_left
    zeros = [0] * (_LAST_SEEN - _FIRST)
    for row in rows:
        (
            purpose, route, tier, model, key_id, status, error,
            at, prompt, completion, cached, written, reasoning, cost, frontier, uncached, fallbacks, latency, ttft,
            checks, steps, parent,
        ) = _READ(row)  # fmt: skip
        key = (purpose, route, tier, model, key_id, status, error)
        if checks or steps or parent is not None:
            signalled.append(row)
        if at.tzinfo is not UTC:
            at = _utc(at)
        if not start <= at < end:
            hour = int(at.timestamp()) // 3600 * 3600
            start = datetime.fromtimestamp(hour, UTC)
            end = start + _HOUR
            groups = by_hour.setdefault(hour, {})
        g = groups.get(key)
        if g is None:
            g = groups[key] = [hour, *key, *zeros, at]
        elif at > g[_LAST_SEEN]:
            g[_LAST_SEEN] = at
        g[8] += 1  # requests, then the token kinds, cost and frontier cost, in MEASURES' order
        g[9] += prompt
        g[10] += completion
        g[11] += cached
        g[12] += written
        g[13] += reasoning
        g[14] += cost
        g[15] += frontier
        if uncached is not None:
            g[_SAVED_AT] += uncached - cost
        if fallbacks is not None:
            g[_FALLBACKS_AT] += 1
        if latency is not None:
            g[_LATENCY_AT + bucket(_LATENCY, latency)] += 1
        if ttft is not None:
            g[_TTFT_AT + bucket(_TTFT, ttft)] += 1
    return list(_none_as_empty(g for groups in by_hour.values() for g in groups.values())), signalled


def _none_as_empty(groups: Iterable[list[Any]]) -> Iterator[list[Any]]:
    """Groups with '' for a dimension a row left NULL: merged where a row wrote '' instead."""
    for g in groups:
        for i in _NULLABLE_AT:
            if g[i] is None:
                g[i] = ""
        yield g


def _merged(groups: Iterable[list[Any]], copy: bool = False) -> list[list[Any]]:
    """Groups of the same dimensions added into one (``copy``: into copies, the groups given
    left as they were)."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for g in groups:
        key = _KEY(g)
        if (into := out.get(key)) is None:
            out[key] = g[:] if copy else g
            continue
        into[_FIRST:_LAST_SEEN] = map(operator.add, into[_FIRST:_LAST_SEEN], g[_FIRST:_LAST_SEEN])
        into[_LAST_SEEN] = max(into[_LAST_SEEN], g[_LAST_SEEN])
    return list(out.values())


_NULLABLE_AT = tuple(_AT[d] for d in NULLABLE)


Staged = dict[str, Any]  # a batch's sums: "hours" (fold's groups), "signals" (table -> [(group, measures)])


def stage(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> tuple[int, Staged] | None:
    """Write what ``rows`` add to the rollups (hours and signals, folded) into ``rollup_pending``,
    in ``conn``'s transaction (the one writing the rows), for :func:`merge` to add later; its id
    and the sums, which the writer may keep to spare the merge reading them back."""
    hours, signalled = fold(rows)
    if not hours:
        return None
    signals = signal_rollups.sums(conn, rows, signalled)
    sums = {"hours": hours, "signals": {k: list(v.items()) for k, v in signals.items()}}
    return conn.execute(_STAGE, {"sums": orjson.dumps(sums)}).scalar_one(), sums


def merge(conn: Connection, most: int = 1_000, known: Mapping[int, Staged] | None = None) -> list[int]:
    """Add the ``most`` oldest staged batches to the rollups in one go (their groups added up
    first: a group recurs batch after batch), in ``conn``'s transaction; the ids merged. The sums
    of a batch in ``known`` (as :func:`stage` returned them) are taken from there, not read back.

    A batch is added by whoever deletes it, so exactly once, however many replicas merge at once
    and wherever one crashed: the delete and the addition commit together."""
    taken = select(PENDING.c.id).order_by(PENDING.c.id).limit(most).scalar_subquery()
    found = conn.execute(PENDING.delete().where(PENDING.c.id.in_(taken)).returning(PENDING.c.id, PENDING.c.sums))
    known = known or {}
    hours: list[list[Any]] = []
    signals: dict[str, dict[tuple[Any, ...], list[Any]]] = {}
    ids = []
    for at, blob in found:
        ids.append(at)
        sums = known.get(at) or _read(blob)
        hours += sums["hours"]
        for name, groups in sums["signals"].items():
            into = signals.setdefault(name, {})
            for group, measures in groups:
                was = into.get(group)
                into[group] = measures if was is None else [a + b for a, b in zip(was, measures, strict=True)]
    if hours:
        _apply(conn, _merged(hours, copy=True), signals)  # ``known`` stays as it was
    return ids


def _read(blob: bytes) -> Staged:
    sums: Staged = orjson.loads(blob)
    for g in sums["hours"]:
        g[_LAST_SEEN] = datetime.fromisoformat(g[_LAST_SEEN])
    sums["signals"] = {name: [(tuple(k), m) for k, m in groups] for name, groups in sums["signals"].items()}
    return sums


def _apply(
    conn: Connection, hours: list[list[Any]], signals: Mapping[str, Mapping[tuple[Any, ...], list[Any]]]
) -> None:
    # Groups in key order: replicas merging at once lock the groups they share in one order.
    hours.sort(key=_KEY)
    _upsert(conn, HOURS, hours)
    signal_rollups.apply(conn, signals)
    mark = days_mark(conn, hold=True)
    if late := [g for g in hours if g[0] < mark]:
        _upsert(conn, DAYS, sorted(_by_day(late), key=_KEY))


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
    if conn.dialect.name == "sqlite":  # the driver takes strings for times: SQLAlchemy's, as its columns store
        stored = _stored_time(conn.dialect)
        folded = [[*g[:_LAST_SEEN], stored(g[_LAST_SEEN])] for g in folded]
    names = (period, *DIMENSIONS[1:], *MEASURES, "last_seen")
    upsert.add(conn, table, names, names[:_FIRST], MEASURES, folded)


@functools.cache
def _stored_time(dialect: Dialect) -> Callable[[Any], Any]:
    processor = HOURS.c.last_seen.type.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    return processor


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
        # Writers wait until the recount commits: a batch committed before it is in the recount
        # (its staged sums deleted below), one after it stages its sums for a later merge.
        conn.execute(text(f"LOCK TABLE {PENDING.name} IN EXCLUSIVE MODE"))
    conn.execute(PENDING.delete())
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
