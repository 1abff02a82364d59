"""The dashboard's reads: every aggregate is computed in SQL (SQLite or PostgreSQL), so a
ledger of millions of rows costs a few queries, not a DataFrame of millions of rows.

Only the ledger's table model is imported from the gateway; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, literal_column, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement, Select

from gateway.ledger.models import LedgerEntry

__all__ = [
    "Filters",
    "Summary",
    "bucket_for",
    "distinct_values",
    "latency_percentiles",
    "mix",
    "recent",
    "request_detail",
    "router_scores",
    "spend_by",
    "spend_over_time",
    "summary",
    "top_expensive",
]

T = LedgerEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    routes: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()

    def where(self) -> ColumnElement[bool]:
        conds: list[ColumnElement[bool]] = []
        if self.since is not None:
            conds.append(T.c.created_at >= self.since)
        if self.until is not None:
            conds.append(T.c.created_at < self.until)
        if self.routes:
            conds.append(T.c.route.in_(self.routes))
        if self.tiers:
            conds.append(T.c.tier.in_(self.tiers))
        if self.api_keys:
            conds.append(T.c.api_key_id.in_(self.api_keys))
        return and_(*conds) if conds else literal_column("1") == literal_column("1")


@dataclass(frozen=True)
class Summary:
    requests: int
    spend_usd: float
    frontier_usd: float
    errors: int
    fallbacks: int

    @property
    def savings_usd(self) -> float:
        return self.frontier_usd - self.spend_usd

    @property
    def savings_pct(self) -> float | None:
        return None if self.frontier_usd <= 0 else self.savings_usd / self.frontier_usd

    @property
    def cost_per_1k(self) -> float | None:
        return None if self.requests == 0 else self.spend_usd / self.requests * 1000

    @property
    def error_rate(self) -> float | None:
        return None if self.requests == 0 else self.errors / self.requests

    @property
    def fallback_rate(self) -> float | None:
        return None if self.requests == 0 else self.fallbacks / self.requests


def summary(engine: Engine, f: Filters) -> Summary:
    q = select(
        func.count(),
        func.coalesce(func.sum(T.c.cost_usd), 0.0),
        func.coalesce(func.sum(T.c.frontier_cost_usd), 0.0),
        func.coalesce(func.sum(case((T.c.status_code >= 400, 1), else_=0)), 0),
        func.coalesce(func.sum(case((T.c.fallbacks.is_not(None), 1), else_=0)), 0),
    ).where(f.where())
    with engine.connect() as conn:
        n, spend, frontier, errors, fallbacks = conn.execute(q).one()
    return Summary(int(n), float(spend), float(frontier), int(errors), int(fallbacks))


def bucket_for(window: timedelta) -> str:
    if window <= timedelta(hours=3):
        return "minute"
    if window <= timedelta(days=7):
        return "hour"
    return "day"


def _bucket(engine: Engine, unit: str) -> ColumnElement[Any]:
    if engine.dialect.name == "sqlite":
        fmt = {"minute": "%Y-%m-%d %H:%M", "hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d"}[unit]
        return func.strftime(fmt, T.c.created_at)
    return func.date_trunc(unit, T.c.created_at)


def _rows(engine: Engine, q: Select[Any]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def spend_over_time(engine: Engine, f: Filters, unit: str) -> list[dict[str, Any]]:
    b = _bucket(engine, unit).label("bucket")
    q = (
        select(b, T.c.tier, func.sum(T.c.cost_usd).label("spend_usd"), func.count().label("requests"))
        .where(f.where())
        .group_by(b, T.c.tier)
        .order_by(b)
    )
    return _rows(engine, q)


def mix(engine: Engine, f: Filters, column: str) -> list[dict[str, Any]]:
    col = T.c[column]
    q = (
        select(col.label(column), func.count().label("requests"))
        .where(f.where())
        .group_by(col)
        .order_by(func.count().desc())
    )
    return _rows(engine, q)


def spend_by(engine: Engine, f: Filters, column: str) -> list[dict[str, Any]]:
    col = T.c[column]
    q = (
        select(
            col.label(column),
            func.count().label("requests"),
            func.sum(T.c.cost_usd).label("spend_usd"),
            func.sum(T.c.frontier_cost_usd - T.c.cost_usd).label("saved_usd"),
            func.sum(T.c.prompt_tokens + T.c.completion_tokens).label("tokens"),
        )
        .where(f.where())
        .group_by(col)
        .order_by(func.sum(T.c.cost_usd).desc())
    )
    return _rows(engine, q)


def latency_percentiles(
    engine: Engine, f: Filters, percentiles: Sequence[float] = (0.5, 0.95), width_ms: float = 5.0
) -> list[dict[str, Any]]:
    """p50/p95 of total latency and time to first token per tier.

    SQL returns a histogram (tier x 5 ms buckets), so a million rows cost one grouped scan per
    measure rather than a sort; percentiles are exact to the bucket (reported at its midpoint).
    """
    out: dict[str, dict[str, Any]] = {}
    for metric in ("latency_ms", "ttft_ms"):
        col = T.c[metric]
        bucket = cast(col / width_ms, Integer).label("bucket")
        q = (
            select(T.c.tier, bucket, func.count())
            .where(and_(f.where(), col.is_not(None), T.c.status_code < 400))
            .group_by(T.c.tier, bucket)
        )
        hist: dict[str, list[tuple[int, int]]] = {}
        with engine.connect() as conn:
            for tier, b, n in conn.execute(q):
                hist.setdefault(str(tier), []).append((int(b), int(n)))
        name = metric.removesuffix("_ms")
        for tier, buckets in hist.items():
            buckets.sort()
            total = sum(n for _, n in buckets)
            row = out.setdefault(tier, {"tier": tier})
            for p in percentiles:
                need, seen = p * total, 0
                for b, n in buckets:
                    seen += n
                    if seen >= need:
                        row[f"{name}_p{int(p * 100)}_ms"] = (b + 0.5) * width_ms
                        break
    return sorted(out.values(), key=lambda r: str(r["tier"]))


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
    return _rows(engine, select(*cols).where(f.where()).order_by(T.c.cost_usd.desc()).limit(limit))


def recent(engine: Engine, f: Filters, limit: int = 50) -> list[dict[str, Any]]:
    cols = [T.c.request_id, T.c.created_at, T.c.route, T.c.tier, T.c.status_code, T.c.cost_usd, T.c.latency_ms]
    return _rows(engine, select(*cols).where(f.where()).order_by(T.c.id.desc()).limit(limit))


def request_detail(engine: Engine, request_id: str) -> dict[str, Any] | None:
    rows = _rows(engine, select(T).where(T.c.request_id == request_id))
    return rows[0] if rows else None


def router_scores(engine: Engine, f: Filters, limit: int = 5000) -> list[dict[str, Any]]:
    """The most recent auto-routed requests' scores (JSON), for the distribution chart."""
    q = (
        select(T.c.tier, T.c.router_tier, T.c.router_scores)
        .where(and_(f.where(), T.c.router_scores.is_not(None)))
        .order_by(T.c.id.desc())
        .limit(limit)
    )
    return _rows(engine, q)


def distinct_values(engine: Engine, column: str, limit: int = 200) -> list[str]:
    col = T.c[column]
    q = select(col).where(col.is_not(None)).group_by(col).order_by(col).limit(limit)
    with engine.connect() as conn:
        return [str(v) for (v,) in conn.execute(q)]


def time_bounds(engine: Engine) -> tuple[datetime | None, datetime | None]:
    with engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(T.c.created_at), func.max(T.c.created_at))).one()
    return _as_dt(lo), _as_dt(hi)


def _as_dt(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v))
