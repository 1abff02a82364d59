"""The dashboard's reads of client traffic: every aggregate is computed in SQL (SQLite or
PostgreSQL), so a ledger of millions of rows costs a few queries, not a DataFrame of millions.

Only client requests count here: the gateway's own calls for quality sampling (purpose
``shadow`` or ``judge``) are shown apart, as the cost of measuring quality. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement, Executable

from dashboard.dialect import epoch_bucket, floor_int
from gateway.ledger.models import LedgerEntry

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
]

REQUESTS: Table = LedgerEntry.__table__  # type: ignore[attr-defined]
T = REQUESTS


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    routes: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    session: str | None = None  # one conversation (the ledger's session_id)

    def where(self, table: Any = T) -> ColumnElement[bool]:
        """The client requests these filters select, on ``table`` (the ledger or an alias of it)."""
        c = table.c
        conds: list[ColumnElement[bool]] = [c.purpose == "client"]
        if self.since is not None:
            conds.append(c.created_at >= self.since)
        if self.until is not None:
            conds.append(c.created_at < self.until)
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


def _count_if(cond: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def summary(engine: Engine, f: Filters, measuring_usd: float = 0.0) -> Summary:
    """``measuring_usd``: what measuring these requests' quality cost (``quality_cost``)."""
    s = T.c.status_code
    q = select(
        func.count(),
        _count_if(s < 400),
        _count_if(and_(s >= 400, s < 500)),
        _count_if(s >= 500),
        func.coalesce(func.sum(T.c.cost_usd), 0.0),
        func.coalesce(func.sum(T.c.frontier_cost_usd), 0.0),
        _count_if(T.c.fallbacks.is_not(None)),
        caching_saved(),
        func.coalesce(func.sum(T.c.prompt_tokens), 0),
        func.coalesce(func.sum(T.c.cache_read_tokens), 0),
    ).where(f.where())
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


def caching_saved() -> ColumnElement[float]:
    """What prompt caching saved: each row's cost without it minus its cost; rows from before
    that was recorded (NULL) are left out."""
    saved = case((T.c.uncached_cost_usd.is_not(None), T.c.uncached_cost_usd - T.c.cost_usd), else_=0.0)
    return func.coalesce(func.sum(saved), 0.0)


# Bucket widths for time charts, finest first; the finest giving at most _MAX_BARS buckets over
# the time the data spans is used: minutes for an hour, hours for a day, 10 s for a short demo.
_BUCKETS = (10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
_MAX_BARS = 60


def bucket_seconds(first: datetime | None, last: datetime | None, max_bars: int = _MAX_BARS) -> int:
    span = (last - first).total_seconds() if first and last else 0.0
    return next((b for b in _BUCKETS if span / b <= max_bars), _BUCKETS[-1])


def time_extent(engine: Engine, f: Filters) -> tuple[datetime | None, datetime | None]:
    with engine.connect() as conn:
        lo, hi = conn.execute(select(func.min(T.c.created_at), func.max(T.c.created_at)).where(f.where())).one()
    return as_datetime(lo), as_datetime(hi)


def as_datetime(v: Any) -> datetime | None:
    """A timestamp from either database, as an aware UTC datetime (SQLite returns text, PG naive)."""
    if v is None:
        return None
    dt = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def spend_over_time(engine: Engine, f: Filters, seconds: int) -> list[dict[str, Any]]:
    """Spend and requests per tier per bucket; ``bucket`` is the bucket's start (Unix seconds).
    Requests refused before a tier was chosen cost nothing and are left out."""
    b = epoch_bucket(engine, T.c.created_at, seconds).label("bucket")
    q = (
        select(b, T.c.tier, func.sum(T.c.cost_usd).label("spend_usd"), func.count().label("requests"))
        .where(and_(f.where(), T.c.tier.is_not(None)))
        .group_by(b, T.c.tier)
        .order_by(b)
    )
    return rows(engine, q)


def mix(engine: Engine, f: Filters, column: str) -> list[dict[str, Any]]:
    """Answered requests by ``column``."""
    col = T.c[column]
    q = (
        select(col.label(column), func.count().label("requests"))
        .where(and_(f.where(), T.c.status_code < 400))
        .group_by(col)
        .order_by(func.count().desc())
    )
    return rows(engine, q)


def spend_by(engine: Engine, f: Filters, column: str) -> list[dict[str, Any]]:
    col = T.c[column]
    q = (
        select(
            col.label(column),
            func.count().label("requests"),
            func.sum(T.c.cost_usd).label("spend_usd"),
            func.sum(T.c.frontier_cost_usd - T.c.cost_usd).label("saved_usd"),
            caching_saved().label("caching_saved_usd"),
            func.sum(T.c.prompt_tokens + T.c.completion_tokens).label("tokens"),
            # The share of input read from a provider's prompt cache (billed at its cached rate)
            (func.sum(T.c.cache_read_tokens) * 1.0 / func.nullif(func.sum(T.c.prompt_tokens), 0)).label(
                "cache_read_share"
            ),
        )
        .where(f.where())
        .group_by(col)
        .order_by(func.sum(T.c.cost_usd).desc())
    )
    return rows(engine, q)


def refusals(engine: Engine, f: Filters) -> list[dict[str, Any]]:
    """Requests that got no answer, by status and error: what turned them away, and whom."""
    q = (
        select(
            T.c.status_code,
            T.c.error_type,
            func.count().label("requests"),
            func.count(func.distinct(T.c.api_key_id)).label("keys"),
            func.max(T.c.created_at).label("last_seen"),
        )
        .where(and_(f.where(), T.c.status_code >= 400))
        .group_by(T.c.status_code, T.c.error_type)
        .order_by(func.count().desc())
    )
    return rows(engine, q)


def latency_percentiles(
    engine: Engine, f: Filters, percentiles: Sequence[float] = (0.5, 0.95), width_ms: float = 5.0
) -> list[dict[str, Any]]:
    """p50/p95 of total latency and time to first token per tier, of answered requests.

    SQL returns a histogram (tier x 5 ms buckets), so a million rows cost one grouped scan per
    measure rather than a sort; percentiles are exact to the bucket (reported at its midpoint).
    """
    out: dict[str, dict[str, Any]] = {}
    for metric in ("latency_ms", "ttft_ms"):
        col = T.c[metric]
        bucket = floor_int(engine, col / width_ms).label("bucket")
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
    return list(out.values())


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


def distinct_values(engine: Engine, column: str, limit: int = 200) -> list[str]:
    col = T.c[column]
    q = select(col).where(and_(col.is_not(None), T.c.purpose == "client")).group_by(col).order_by(col).limit(limit)
    with engine.connect() as conn:
        return [str(v) for (v,) in conn.execute(q)]


def tier_prices(engine: Engine) -> list[str]:
    """Tiers the ledger knows, cheapest per token first (their order when no policy is recorded)."""
    tokens = func.sum(T.c.prompt_tokens + T.c.completion_tokens)
    q = select(T.c.tier, func.sum(T.c.cost_usd), tokens).where(T.c.tier.is_not(None)).group_by(T.c.tier)
    with engine.connect() as conn:
        found = [(str(t), float(c or 0) / n if n else float("inf")) for t, c, n in conn.execute(q)]
    return [t for t, _ in sorted(found, key=lambda x: (x[1], x[0]))]
