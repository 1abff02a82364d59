"""The dashboard's reads of client traffic: every aggregate is computed in SQL (SQLite or
PostgreSQL), so a ledger of millions of rows costs a few queries, not a DataFrame of millions.

Totals and charts read the ledger's rollups (kept by the writer): the daily ones for the whole
days a selection covers where a chart's buckets are days or more, the hourly ones for the other
whole hours, and the raw rows only for a partial hour at an edge (or for every row when the
selection is one conversation): :func:`traffic` is that source, in the rollups' shape, and the
aggregates sum it. Latency percentiles come from the rollups' histograms. Per-request tables
(the most expensive, the most recent, one request) read rows through their indexes.

Only client requests count here: the gateway's own calls for quality sampling (purpose
``shadow`` or ``judge``) are shown apart, as the cost of measuring quality. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, Table, and_, case, func, literal, or_, select, union_all
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement, Executable, Subquery

from dashboard.dialect import epoch_bucket
from gateway.ledger.models import LedgerEntry
from gateway.ledger.rollups import BOUNDS_MS, BUCKETS, DAYS, DIMENSIONS, HOURS, NULLABLE, days_mark, histogram_columns

__all__ = [
    "REQUESTS",
    "Filters",
    "Summary",
    "as_datetime",
    "bucket_seconds",
    "distinct_values",
    "latency_percentiles",
    "mix",
    "recent",
    "refusals",
    "request_detail",
    "router_scores",
    "rows",
    "spend_by",
    "spend_over_time",
    "summary",
    "tier_prices",
    "time_extent",
    "top_expensive",
    "traffic",
    "whole_hours",
]

REQUESTS: Table = LedgerEntry.__table__  # type: ignore[attr-defined]
T = REQUESTS
H = HOURS
_HOUR = 3600
_DAY = 86400


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    routes: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    session: str | None = None  # one conversation (the ledger's session_id)

    def where(self, table: Any = T, at: Any = None) -> ColumnElement[bool]:
        """The client requests these filters select, on ``table`` (the ledger or an alias of it);
        ``at``: the time column as the query should read it (default: ``table``'s created_at)."""
        c = table.c
        at = c.created_at if at is None else at
        conds: list[ColumnElement[bool]] = [c.purpose == "client"]
        if self.since is not None:
            conds.append(at >= self.since)
        if self.until is not None:
            conds.append(at < self.until)
        if self.routes:
            conds.append(c.route.in_(self.routes))
        if self.tiers:
            conds.append(c.tier.in_(self.tiers))
        if self.api_keys:
            conds.append(c.api_key_id.in_(self.api_keys))
        if self.session:
            conds.append(c.session_id == self.session)
        return and_(*conds)


@dataclass(frozen=True)
class Summary:
    requests: int  # every client request, refused ones included
    answered: int  # status < 400
    refused: int  # 4xx: turned away before any upstream was paid (auth, limits, budgets, bad requests)
    failed: int  # 5xx: accepted, but no upstream could answer
    spend_usd: float
    frontier_usd: float
    fallbacks: int
    caching_saved_usd: float = 0.0  # the same tokens without prompt caching, minus spend
    prompt_tokens: int = 0
    cache_read_tokens: int = 0
    measuring_usd: float = 0.0  # shadow answers and judge calls for these requests

    @property
    def savings_usd(self) -> float:
        """Against all-frontier, net of what measuring quality cost: routing has to pay for its
        own checks (a judged sample costs a shadow answer and two judge calls)."""
        return self.frontier_usd - self.spend_usd - self.measuring_usd

    @property
    def savings_pct(self) -> float | None:
        return None if self.frontier_usd <= 0 else self.savings_usd / self.frontier_usd

    @property
    def cache_read_share(self) -> float | None:
        return None if self.prompt_tokens <= 0 else self.cache_read_tokens / self.prompt_tokens

    @property
    def cost_per_1k(self) -> float | None:
        return None if self.answered == 0 else self.spend_usd / self.answered * 1000

    def rate(self, count: int) -> float | None:
        return None if self.requests == 0 else count / self.requests


def rows(engine: Engine, q: Executable) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def summary(engine: Engine, f: Filters, measuring_usd: float = 0.0) -> Summary:
    """``measuring_usd``: what measuring these requests' quality cost (``quality_cost``)."""
    src = traffic(engine, f, _SUMMARY)
    s, n = src.c.status_code, src.c.requests

    def total(col: Any) -> ColumnElement[Any]:
        return func.coalesce(func.sum(col), 0)

    q = select(
        total(n),
        total(case((s < 400, n), else_=0)),
        total(case((and_(s >= 400, s < 500), n), else_=0)),
        total(case((s >= 500, n), else_=0)),
        total(src.c.cost_usd),
        total(src.c.frontier_cost_usd),
        total(src.c.fallbacks),
        total(src.c.caching_saved_usd),
        total(src.c.prompt_tokens),
        total(src.c.cache_read_tokens),
    )
    with engine.connect() as conn:
        n, answered, refused, failed, spend, frontier, fallbacks, cached, prompt, read = conn.execute(q).one()
    return Summary(
        int(n),
        int(answered),
        int(refused),
        int(failed),
        float(spend),
        float(frontier),
        int(fallbacks),
        float(cached),
        int(prompt),
        int(read),
        measuring_usd,
    )


def traffic(engine: Engine, f: Filters, measures: Sequence[str], resolution: int = _DAY) -> Subquery:
    """The client requests ``f`` selects, in the rollups' shape (dimensions with '' for none, and
    ``measures``, the rollups' columns the caller sums, ``last_seen`` among them if it reads it;
    ``hour`` is the start of the period a row covers): whole days from the daily rollups where
    ``resolution`` (the finest time bucket the caller groups by, in seconds) is a multiple of a
    day, other whole hours from the hourly ones, the rest from the ledger's rows."""
    if f.session is not None:
        return _rows_as_rollups(engine, f, measures).subquery()
    lo, hi, edges = whole_hours(f)
    parts: list[Select[Any]] = []
    hours: list[ColumnElement[bool]] = []
    if resolution % _DAY == 0:
        with engine.connect() as conn:
            mark = days_mark(conn)
        day_lo = -(-lo // _DAY) * _DAY if lo is not None else None
        day_hi = min(hi // _DAY * _DAY, mark) if hi is not None else mark
        if day_lo is None or day_lo < day_hi:
            parts.append(_rollups(DAYS, DAYS.c.day, f, day_lo, day_hi, measures))
            hours.append(H.c.hour >= day_hi if day_lo is None else or_(H.c.hour < day_lo, H.c.hour >= day_hi))
    parts.append(_rollups(H, H.c.hour, f, lo, hi, measures).where(*hours))
    return union_all(*parts, *(_rows_as_rollups(engine, e, measures) for e in edges)).subquery()


def whole_hours(f: Filters) -> tuple[int | None, int | None, list[Filters]]:
    """The whole hours ``f`` covers, [lo, hi) in Unix seconds (None: open), and the partial
    hours at its edges, as filters of their own (the whole window when it has no whole hour)."""
    whole_from = _hour_up(f.since) if f.since is not None else None
    whole_to = _hour_down(f.until) if f.until is not None else None
    if whole_from is not None and whole_to is not None and whole_from >= whole_to:
        return 0, 0, [f]
    edges = []
    if whole_from is not None and whole_from != f.since:
        edges.append(replace(f, until=whole_from))
    if whole_to is not None and whole_to != f.until:
        edges.append(replace(f, since=whole_to))
    lo = int(whole_from.timestamp()) if whole_from is not None else None
    hi = int(whole_to.timestamp()) if whole_to is not None else None
    return lo, hi, edges


def _rollups(
    table: Table, period: Any, f: Filters, lo: int | None, hi: int | None, measures: Sequence[str]
) -> Select[Any]:
    """``table``'s client rows ``f`` selects, periods starting in [lo, hi), period as ``hour``."""
    c = table.c
    conds: list[ColumnElement[bool]] = [c.purpose == "client"]
    if lo is not None:
        conds.append(period >= lo)
    if hi is not None:
        conds.append(period < hi)
    if f.routes:
        conds.append(c.route.in_(f.routes))
    if f.tiers:
        conds.append(c.tier.in_(f.tiers))
    if f.api_keys:
        conds.append(c.api_key_id.in_(f.api_keys))
    return select(period.label("hour"), *(c[d] for d in DIMENSIONS[1:]), *(c[m] for m in measures)).where(and_(*conds))


def _hour_up(at: datetime) -> datetime:
    down = _hour_down(at)
    return down if down == at else datetime.fromtimestamp(down.timestamp() + _HOUR, UTC)


def _hour_down(at: datetime) -> datetime:
    return datetime.fromtimestamp(int(at.timestamp()) // _HOUR * _HOUR, UTC)


def _rows_as_rollups(engine: Engine, f: Filters, measures: Sequence[str]) -> Select[Any]:
    """Ledger rows in the rollups' shape, one row each."""
    dims: list[Any] = [epoch_bucket(engine, T.c.created_at, _HOUR).label("hour")]
    dims += [func.coalesce(T.c[d], "").label(d) if d in NULLABLE else T.c[d] for d in DIMENSIONS[1:]]
    return select(*dims, *(_ROW_MEASURES[m].label(m) for m in measures)).where(f.where())


def _row_measures() -> dict[str, ColumnElement[Any]]:
    """Each rollup measure, for one ledger row."""
    out: dict[str, ColumnElement[Any]] = {"requests": literal(1), "last_seen": T.c.created_at}
    out |= {m: T.c[m] for m in ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_write_tokens")}
    out |= {m: T.c[m] for m in ("reasoning_tokens", "cost_usd", "frontier_cost_usd")}
    saved = T.c.uncached_cost_usd - T.c.cost_usd
    out["caching_saved_usd"] = case((T.c.uncached_cost_usd.is_not(None), saved), else_=0.0)
    out["fallbacks"] = case((T.c.fallbacks.is_not(None), 1), else_=0)
    for metric, bounds in BOUNDS_MS.items():
        col, lower = T.c[metric], None
        for name, upper in zip(histogram_columns(metric), [*bounds, None], strict=True):
            within: list[ColumnElement[bool]] = [col > lower if lower is not None else col.is_not(None)]
            within += [col <= upper] if upper is not None else []
            out[name] = case((and_(*within), 1), else_=0)
            lower = upper
    return out


_ROW_MEASURES = _row_measures()


def _none(value: Any) -> Any:
    """A rollup dimension's '' (none) as the ledger's NULL."""
    return None if value == "" else value


# Bucket widths for time charts, finest first; the finest giving at most _MAX_BARS buckets over
# the time the data spans is used: minutes for an hour, hours for a day, 10 s for a short demo.
_BUCKETS = (10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
# The measures each read sums: a union carries only those (an edge hour's rows then compute no
# histogram a spend table does not read).
_SPEND = ("requests", "cost_usd", "frontier_cost_usd", "caching_saved_usd", "prompt_tokens", "cache_read_tokens")
_SUMMARY = (*_SPEND, "fallbacks")
_MAX_BARS = 60


def bucket_seconds(first: datetime | None, last: datetime | None, max_bars: int = _MAX_BARS) -> int:
    span = (last - first).total_seconds() if first and last else 0.0
    return next((b for b in _BUCKETS if span / b <= max_bars), _BUCKETS[-1])


def time_extent(engine: Engine, f: Filters) -> tuple[datetime | None, datetime | None]:
    """The first and last request ``f`` selects, from the rows through the time index; where
    retention deleted the first rows, the start of the first hour the rollups still count."""
    with engine.connect() as conn:
        # apart: SQLite reads a lone min() or max() off the index's end, not both in one query
        first = conn.execute(select(func.min(T.c.created_at)).where(f.where())).scalar()
        last = conn.execute(select(func.max(T.c.created_at)).where(f.where())).scalar()
        if f.session is not None:
            return as_datetime(first), as_datetime(last)
        lo, hi, _ = whole_hours(f)
        conds = [H.c.purpose == "client"] + ([H.c.hour >= lo] if lo is not None else [])
        conds += [H.c.hour < hi] if hi is not None else []
        conds += [H.c[c].in_(v) for c, v in (("route", f.routes), ("tier", f.tiers), ("api_key_id", f.api_keys)) if v]
        q = select(func.min(H.c.hour)).where(*conds)
        if first is not None:  # only an hour before the first row's can be one whose rows were deleted
            q = q.where(H.c.hour < int(as_datetime(first).timestamp()) // _HOUR * _HOUR)  # type: ignore[union-attr]
        pruned = conn.execute(q).scalar()
    if pruned is not None:
        start = datetime.fromtimestamp(int(pruned), UTC)
        return (max(start, f.since) if f.since is not None else start), as_datetime(last) or start
    return as_datetime(first), as_datetime(last)


def as_datetime(v: Any) -> datetime | None:
    """A timestamp from either database, as an aware UTC datetime (SQLite returns text, PG naive)."""
    if v is None:
        return None
    dt = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def spend_over_time(engine: Engine, f: Filters, seconds: int) -> list[dict[str, Any]]:
    """Spend and requests per tier per bucket; ``bucket`` is the bucket's start (Unix seconds).
    Requests refused before a tier was chosen cost nothing and are left out. Buckets of whole
    hours add up the rollups; finer ones (a short span) count the rows."""
    if seconds % _HOUR:
        b = epoch_bucket(engine, T.c.created_at, seconds).label("bucket")
        q = (
            select(b, T.c.tier, func.sum(T.c.cost_usd).label("spend_usd"), func.count().label("requests"))
            .where(and_(f.where(), T.c.tier.is_not(None)))
            .group_by(b, T.c.tier)
            .order_by(b)
        )
        return rows(engine, q)
    src = traffic(engine, f, ("cost_usd", "requests"), resolution=seconds)
    b = (src.c.hour // seconds * seconds).label("bucket")
    q = (
        select(b, src.c.tier, func.sum(src.c.cost_usd).label("spend_usd"), func.sum(src.c.requests).label("requests"))
        .where(src.c.tier != "")
        .group_by(b, src.c.tier)
        .order_by(b)
    )
    return [{**r, "requests": int(r["requests"])} for r in rows(engine, q)]


def mix(engine: Engine, f: Filters, columns: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Answered requests by each of ``columns``, most first (one read of the rollups)."""
    src = traffic(engine, f, ("requests",))
    cols = [src.c[c] for c in columns]
    q = select(*cols, func.sum(src.c.requests).label("requests")).where(src.c.status_code < 400).group_by(*cols)
    out: dict[str, dict[Any, int]] = {c: {} for c in columns}
    for r in rows(engine, q):
        for c in columns:
            out[c][r[c]] = out[c].get(r[c], 0) + int(r["requests"])
    return {
        c: [{c: _none(v), "requests": n} for v, n in sorted(found.items(), key=lambda x: -x[1])]
        for c, found in out.items()
    }


def spend_by(engine: Engine, f: Filters, columns: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Requests, spend, savings, tokens and cache reads by each of ``columns``, dearest first
    (one read of the rollups, grouped by all of them; the few groups added up here)."""
    src = traffic(engine, f, _SPENT)
    cols = [src.c[c] for c in columns]
    measures = _SPENT
    q = select(*cols, *(func.sum(src.c[m]).label(m) for m in measures)).group_by(*cols)
    out: dict[str, dict[Any, list[float]]] = {c: {} for c in columns}
    for r in rows(engine, q):
        for c in columns:
            sums = out[c].setdefault(r[c], [0.0] * len(measures))
            for i, m in enumerate(measures):
                sums[i] += float(r[m] or 0)
    return {
        c: sorted((_spend_row(c, v, sums) for v, sums in found.items()), key=lambda r: -r["spend_usd"])
        for c, found in out.items()
    }


_SPENT = (*_SPEND[:5], "completion_tokens", "cache_read_tokens")  # in _spend_row's order


def _spend_row(column: str, value: Any, sums: list[float]) -> dict[str, Any]:
    n, cost, frontier, saved, prompt, completion, read = sums
    return {
        column: _none(value),
        "requests": int(n),
        "spend_usd": cost,
        "saved_usd": frontier - cost,
        "caching_saved_usd": saved,
        "tokens": int(prompt + completion),
        # The share of input read from a provider's prompt cache (billed at its cached rate)
        "cache_read_share": read / prompt if prompt else None,
    }


def refusals(engine: Engine, f: Filters) -> list[dict[str, Any]]:
    """Requests that got no answer, by status and error: what turned them away, and whom."""
    src = traffic(engine, f, ("requests", "last_seen"))
    n = func.sum(src.c.requests)
    q = (
        select(
            src.c.status_code,
            src.c.error_type,
            n.label("requests"),
            func.count(func.distinct(func.nullif(src.c.api_key_id, ""))).label("keys"),
            func.max(src.c.last_seen).label("last_seen"),
        )
        .where(src.c.status_code >= 400)
        .group_by(src.c.status_code, src.c.error_type)
        .order_by(n.desc())
    )
    return [{**r, "error_type": _none(r["error_type"]), "requests": int(r["requests"])} for r in rows(engine, q)]


def latency_percentiles(engine: Engine, f: Filters, percentiles: Sequence[float] = (0.5, 0.95)) -> list[dict[str, Any]]:
    """p50/p95 of total latency and time to first token per tier, of answered requests, from the
    rollups' histograms: the rank's bucket, interpolated linearly within it (as Prometheus's
    histogram_quantile does); a rank in the open last bucket reads as its lower bound."""
    src = traffic(engine, f, BUCKETS)
    sums = [func.sum(src.c[b]).label(b) for b in BUCKETS]
    q = select(src.c.tier, *sums).where(and_(src.c.status_code < 400, src.c.tier != "")).group_by(src.c.tier)
    out = []
    for r in rows(engine, q):
        row: dict[str, Any] = {"tier": str(r["tier"])}
        for metric, bounds in BOUNDS_MS.items():
            counts = [int(r[n] or 0) for n in histogram_columns(metric)]
            for p in percentiles if sum(counts) else ():
                row[f"{metric.removesuffix('_ms')}_p{int(p * 100)}_ms"] = _quantile(p, counts, bounds)
        if len(row) > 1:
            out.append(row)
    return out


def _quantile(p: float, counts: list[int], bounds: list[float]) -> float:
    rank, seen = p * sum(counts), 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            lower = bounds[i - 1] if i else 0.0
            if i == len(bounds):
                return lower
            return lower + (bounds[i] - lower) * (rank - seen) / n
        seen += n
    return bounds[-1]


def top_expensive(engine: Engine, f: Filters, limit: int = 10) -> list[dict[str, Any]]:
    cols = [
        T.c.request_id,
        T.c.created_at,
        T.c.route,
        T.c.tier,
        T.c.deployment,
        T.c.prompt_tokens,
        T.c.completion_tokens,
        T.c.cost_usd,
    ]
    return rows(engine, select(*cols).where(f.where()).order_by(T.c.cost_usd.desc()).limit(limit))


def recent(engine: Engine, f: Filters, limit: int = 50) -> list[dict[str, Any]]:
    cols = [
        T.c.request_id,
        T.c.created_at,
        T.c.api,
        T.c.route,
        T.c.tier,
        T.c.session_id,
        T.c.status_code,
        T.c.error_type,
        T.c.cost_usd,
        T.c.latency_ms,
    ]
    return rows(engine, select(*cols).where(f.where()).order_by(T.c.created_at.desc(), T.c.id.desc()).limit(limit))


def request_detail(engine: Engine, request_id: str) -> dict[str, Any] | None:
    found = rows(engine, select(T).where(T.c.request_id == request_id))
    return found[0] if found else None


def router_scores(engine: Engine, f: Filters, limit: int = 5000) -> list[dict[str, Any]]:
    """The most recent auto-routed requests' scores (JSON), for the distribution chart."""
    q = (
        select(T.c.tier, T.c.router_tier, T.c.router_scores)
        .where(and_(f.where(), T.c.router_scores.is_not(None)))
        .order_by(T.c.id.desc())
        .limit(limit)
    )
    return rows(engine, q)


def _all_time(engine: Engine, *columns: str) -> Subquery:
    """``columns`` of every rollup, all purposes: the days, then the hours after them."""
    with engine.connect() as conn:
        mark = days_mark(conn)
    days = select(*(DAYS.c[c] for c in columns))
    return union_all(days, select(*(H.c[c] for c in columns)).where(H.c.hour >= mark)).subquery()


def distinct_values(engine: Engine, column: str, limit: int = 200) -> list[str]:
    src = _all_time(engine, column, "purpose")
    col = src.c[column]
    q = select(col).where(and_(col != "", src.c.purpose == "client")).group_by(col).order_by(col).limit(limit)
    with engine.connect() as conn:
        return [str(v) for (v,) in conn.execute(q)]


def tier_prices(engine: Engine) -> list[str]:
    """Tiers the ledger knows, cheapest per token first (their order when no policy is recorded)."""
    src = _all_time(engine, "tier", "cost_usd", "prompt_tokens", "completion_tokens")
    tokens = func.sum(src.c.prompt_tokens + src.c.completion_tokens)
    q = select(src.c.tier, func.sum(src.c.cost_usd), tokens).where(src.c.tier != "").group_by(src.c.tier)
    with engine.connect() as conn:
        found = [(str(t), float(c or 0) / int(n) if n else float("inf")) for t, c, n in conn.execute(q)]
    return [t for t, _ in sorted(found, key=lambda x: (x[1], x[0]))]
