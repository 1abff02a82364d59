"""The dashboard's reads of the quality signals: judged samples, feedback, failed answer checks,
escalations, and what the gateway's own quality calls cost. Aggregates stay in SQL (SQLite and
PostgreSQL alike); Python only adds up the few grouped rows that come back.

Judged samples, feedback and checks are selected through the client request they belong to, so
the sidebar's filters (window, route, tier, key) apply to them as to the traffic figures. They
are few beside the requests, and each read starts from them: judgements and feedback through
their own time index (each is written after its request), failed checks and escalation steps
through partial indexes of the rows that have them, answered counts from the rollups, and
quality calls from their rollups (``quality_hours``) but for an edge hour or a key's view.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement

from dashboard.dialect import epoch_bucket, floor_int, json_key_float, outer_first, unindexed
from dashboard.queries import REQUESTS, Filters, rows, traffic, whole_hours
from gateway.ledger.signal_rollups import (
    ANY_CHECK,
    CHECKS,
    FEEDBACK,
    JUDGED,
    QUALITY,
    STEPS,
    UNKNOWN,
    check_counts,
    columns,
    step_counts,
)
from gateway.quality.models import Feedback, Judgement
from gateway.quality.stats import Sums

__all__ = [
    "Calibration",
    "CheckFailures",
    "Escalations",
    "Judged",
    "about_request",
    "calibration",
    "check_failures",
    "escalations",
    "feedback_by_tier",
    "judged_over_time",
    "quality_cost",
]

R = REQUESTS
Counting = Callable[[Iterable[Mapping[str, Any]]], Counter[Any]]  # signal_rollups' readers of rows
J: Table = Judgement.__table__  # type: ignore[attr-defined]
F: Table = Feedback.__table__  # type: ignore[attr-defined]

# A sample stands for 1 / sample_rate requests.
_W = case((J.c.sample_rate > 0, 1.0 / J.c.sample_rate), else_=1.0)
_VALID = J.c.adequacy.is_not(None)
_SERVED_REFERENCE = J.c.served_tier == J.c.reference_tier


def _after(engine: Engine, f: Filters, table: Table) -> ColumnElement[bool]:
    """``f`` on the requests ``table``'s rows belong to, read from ``table``'s side: its own time
    (never before its request's) bounds the rows, and the request's time index is left alone."""
    conds = [f.where(R, at=unindexed(engine, R.c.created_at))]
    if f.since is not None:
        conds.append(table.c.created_at >= f.since)
    return and_(*conds)


def _sum_if(cond: ColumnElement[bool], value: Any) -> ColumnElement[float]:
    return func.coalesce(func.sum(case((cond, value), else_=0)), 0)


@dataclass
class Judged:
    """Judged samples, added up per tier judged (the cheaper of the pair) and overall.

    ``quality`` is the served traffic's quality relative to always using the reference tier: a
    sample the reference tier served counts 1 by definition, one a cheaper tier served counts its
    adequacy. ``adequacy[tier]``: how often the tier's answer was not beaten by the reference's.
    """

    adequacy: dict[str, Sums] = field(default_factory=dict)
    verdicts: dict[str, Counter[str]] = field(default_factory=dict)
    quality: Sums = field(default_factory=Sums)
    samples: int = 0
    unparseable: int = 0


def _judged_query(engine: Engine, f: Filters, bucket_s: int) -> list[dict[str, Any]]:
    keys: list[Any] = [
        epoch_bucket(engine, R.c.created_at, bucket_s).label("bucket"),
        unindexed(engine, J.c.cheaper_tier).label("cheaper_tier"),
        case((_SERVED_REFERENCE, 1), else_=0).label("served_reference"),
    ]
    q = (
        select(
            *keys,
            func.count().label("n"),
            _sum_if(_VALID, 1).label("n_valid"),
            func.sum(_W).label("w"),
            func.sum(_W * _W).label("w2"),
            _sum_if(_VALID, _W).label("w_valid"),
            _sum_if(_VALID, _W * _W).label("w2_valid"),
            func.coalesce(func.sum(_W * J.c.adequacy), 0).label("wa"),
            _sum_if(J.c.verdict == "win", 1).label("win"),
            _sum_if(J.c.verdict == "tie", 1).label("tie"),
            _sum_if(J.c.verdict == "loss", 1).label("loss"),
            _sum_if(J.c.verdict == "unparseable", 1).label("unparseable"),
        )
        .select_from(outer_first(J, R, R.c.request_id == J.c.request_id))
        .where(_after(engine, f, J))
        .group_by(*keys)
    )
    return rows(engine, q)


def _add(out: Judged, r: dict[str, Any]) -> None:
    tier = str(r["cheaper_tier"])
    valid = Sums(int(r["n_valid"]), float(r["w_valid"]), float(r["w2_valid"]), float(r["wa"]))
    out.adequacy[tier] = out.adequacy.get(tier, Sums()) + valid
    out.verdicts.setdefault(tier, Counter()).update({k: int(r[k]) for k in ("win", "tie", "loss", "unparseable")})
    if r["served_reference"]:  # the reference's own answer: quality 1, where the judge was read at all
        out.quality += Sums(valid.n, valid.w, valid.w2, valid.w)
    else:
        out.quality += valid
    out.samples += int(r["n"])
    out.unparseable += int(r["unparseable"])


def judged_over_time(engine: Engine, f: Filters, bucket_s: int) -> tuple[Judged, dict[int, Judged]]:
    """The judged samples in all, and per time bucket of ``bucket_s`` (the bucket's start)."""
    out, series = Judged(), defaultdict[int, Judged](Judged)
    found, edges = [], [f]
    if bucket_s % 3600 == 0:
        conds, edges = _rollup_window(f, JUDGED)
        sums = [func.sum(JUDGED.c[m]).label(m) for m in _JUDGED_SUMS]
        keys = [
            (JUDGED.c.hour // bucket_s * bucket_s).label("bucket"),
            JUDGED.c.cheaper_tier,
            JUDGED.c.served_reference,
        ]
        found = rows(engine, select(*keys, *sums).where(*conds).group_by(*keys)) if conds is not None else []
    for edge in edges:
        found += _judged_query(engine, edge, bucket_s)
    for r in found:
        _add(out, r)
        _add(series[int(r["bucket"])], r)
    return out, dict(sorted(series.items()))


_JUDGED_SUMS = ("n", "n_valid", "w", "w2", "w_valid", "w2_valid", "wa", "win", "tie", "loss", "unparseable")


def _rollup_window(f: Filters, table: Table) -> tuple[list[ColumnElement[bool]] | None, list[Filters]]:
    """The conditions on ``table`` (hourly rollups by route and tier, no key) for the whole hours
    ``f`` covers, and what is left to the rows, as filters: the partial hours at the edges, or
    all of ``f`` (conditions None) for a key's or a conversation's view."""
    if f.api_keys or f.session is not None:
        return None, [f]
    lo, hi, edges = whole_hours(f)
    conds: list[ColumnElement[bool]] = []
    if lo is not None:
        conds.append(table.c.hour >= lo)
    if hi is not None:
        conds.append(table.c.hour < hi)
    if f.routes:
        conds.append(table.c.route.in_(f.routes))
    if f.tiers:
        conds.append(table.c.tier.in_(f.tiers))
    return conds, edges


@dataclass(frozen=True)
class Calibration:
    bin: int  # predicted quality in [bin / bins, (bin + 1) / bins)
    predicted: float  # the weighted mean prediction in the bin
    adequacy: Sums


def calibration(engine: Engine, f: Filters) -> list[Calibration]:
    """The router's predicted quality for the judged (cheaper) tier, in bins of 0.1, against how
    often the judge found that tier adequate. Samples served without the router are left out."""
    conds, edges = _rollup_window(f, JUDGED)
    found = []
    if conds is not None:
        j = JUDGED.c
        sums = [func.sum(j[m]).label(name) for m, name in _CALIBRATION.items()]
        found = rows(engine, select(j.bin, *sums).where(*conds, j.bin >= 0).group_by(j.bin))
    p = json_key_float(engine, J.c.predicted, J.c.cheaper_tier)
    b = floor_int(engine, p * 10).label("bin")
    for edge in edges:
        q = (
            select(
                b,
                func.count().label("n"),
                func.sum(_W).label("w"),
                func.sum(_W * _W).label("w2"),
                func.sum(_W * J.c.adequacy).label("wa"),
                func.sum(_W * p).label("wp"),
            )
            .select_from(outer_first(J, R, R.c.request_id == J.c.request_id))
            .where(and_(_after(engine, edge, J), J.c.predicted.is_not(None), _VALID, p.is_not(None)))
            .group_by(b)
        )
        found += rows(engine, q)
    merged: dict[int, tuple[Sums, float]] = {}
    for r in found:
        k = min(max(int(r["bin"]), 0), 9)  # a prediction of exactly 1.0 joins the top bin
        s, wp = merged.get(k, (Sums(), 0.0))
        merged[k] = (s + Sums(int(r["n"]), float(r["w"]), float(r["w2"]), float(r["wa"])), wp + float(r["wp"]))
    return [Calibration(k, wp / s.w, s) for k, (s, wp) in sorted(merged.items()) if s.w > 0]


# the rollups' sums over valid samples, as the calibration reads them
_CALIBRATION = {"n_valid": "n", "w_valid": "w", "w2_valid": "w2", "wa": "wa", "wp": "wp"}


def feedback_by_tier(engine: Engine, f: Filters) -> list[dict[str, Any]]:
    """Clients' verdicts per tier that answered: how many, their mean, thumbs up and down."""
    hourly, edges = _hourly(engine, f, FEEDBACK)
    sums: dict[str, list[float]] = {tier: [float(v) for v in m] for (tier,), m in hourly.items()}
    tier = unindexed(engine, R.c.tier).label("tier")
    for edge in edges:
        q = (
            select(
                tier,
                func.count().label("n"),
                _sum_if(F.c.score >= 1, 1).label("up"),
                _sum_if(F.c.score <= 0, 1).label("down"),
                func.sum(F.c.score).label("score"),
            )
            .select_from(outer_first(F, R, R.c.request_id == F.c.request_id))
            .where(_after(engine, edge, F))
            .group_by(tier)
        )
        for r in rows(engine, q):
            mine = sums.setdefault(r["tier"] or "", [0.0] * 4)
            for i, m in enumerate(("n", "up", "down", "score")):
                mine[i] += float(r[m])
    return [
        {"tier": t or None, "n": int(n), "mean": score / n, "up": int(up), "down": int(down)}
        for t, (n, up, down, score) in sorted(sums.items())
        if n
    ]


def _answered(engine: Engine, f: Filters) -> Counter[str]:
    """Answered requests per tier, from the rollups ('' for none)."""
    src = traffic(engine, f, ("requests",))
    q = select(src.c.tier, func.sum(src.c.requests)).where(src.c.status_code < 400).group_by(src.c.tier)
    with engine.connect() as conn:
        return Counter({str(t): int(n) for t, n in conn.execute(q)})


def _signals(engine: Engine, f: Filters, table: Table, column: str, count: Counting) -> Counter[tuple[Any, ...]]:
    """(tier, *signal) -> count over the selection: whole hours from the signal's rollups, the
    rest (an edge hour; any key's or conversation's view) counted from the rows that carry it."""
    hourly, edges = _hourly(engine, f, table)
    out: Counter[tuple[Any, ...]] = Counter({group: int(n) for group, (n,) in hourly.items()})
    cols = [R.c[c] for c in ("created_at", "route", "tier", "purpose", "status_code", column)]
    for edge in edges:
        found = rows(engine, select(*cols).where(and_(edge.where(R), R.c[column].is_not(None))))
        for (_, _, *group), n in count(found).items():
            out[tuple(group)] += n
    return out


def _hourly(engine: Engine, f: Filters, table: Table) -> tuple[dict[tuple[Any, ...], list[Any]], list[Filters]]:
    """``table``'s rollups over the whole hours ``f`` covers, (tier, *signal) -> its measures;
    and what they leave to the rows, as filters (see _rollup_window)."""
    conds, edges = _rollup_window(f, table)
    if conds is None:
        return {}, edges
    dims, measures = columns(table)
    group = [table.c[d] for d in dims if d not in ("hour", "route")]  # tier first
    sums = [func.sum(table.c[m]) for m in measures]
    with engine.connect() as conn:
        found = conn.execute(select(*group, *sums).where(*conds).group_by(*group))
        return {tuple(r[: len(group)]): list(r[len(group) :]) for r in found}, edges


@dataclass
class CheckFailures:
    answered: Counter[str] = field(default_factory=Counter)  # tier -> answered requests
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tier, check) -> failures
    any_failed: Counter[str] = field(default_factory=Counter)  # tier -> answers failing any check


def check_failures(engine: Engine, f: Filters) -> CheckFailures:
    """Failed answer checks per tier, by whatever check names the gateway wrote."""
    out = CheckFailures()
    out.answered.update({t: n for t, n in _answered(engine, f).items() if t})
    for (tier, check), n in _signals(engine, f, CHECKS, "checks", check_counts).items():
        if check == ANY_CHECK:
            out.any_failed[tier] += n
        else:
            out.failed[(tier, check)] += n
    return out


@dataclass
class Escalations:
    tried: Counter[str] = field(default_factory=Counter)  # tier -> answers asked of it
    escalated: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tier, reason) -> moved on


def escalations(engine: Engine, f: Filters) -> Escalations:
    """How often each tier's answer was passed over for the next tier's, and why.

    ``steps`` lists every answer a request paid for, each with its tier and, when the gateway
    moved on from it, its ``reasons`` (the failed checks; a step moved on for two counts for
    both). A request without steps tried its tier once.
    """
    out = Escalations()
    for tier, n in _answered(engine, f).items():
        out.tried[tier or UNKNOWN] += n
    for (tier, step_tier, reason), n in _signals(engine, f, STEPS, "steps", step_counts).items():
        if not step_tier:  # an escalated request: counted through its steps instead
            out.tried[tier or UNKNOWN] -= n
        elif not reason:
            out.tried[step_tier] += n
        else:
            out.escalated[(step_tier, reason)] += n
    out.tried = +out.tried  # a tier every answer of which escalated, seen in no step, tried none
    return out


def quality_cost(engine: Engine, f: Filters) -> list[dict[str, Any]]:
    """The gateway's own shadow and judge calls for the selected requests: how many, what they
    cost."""
    hourly, edges = _hourly(engine, f, QUALITY)
    calls: Counter[str] = Counter()
    cost: defaultdict[str, float] = defaultdict(float)
    for (_, purpose), (n, usd) in hourly.items():
        calls[purpose] += int(n)
        cost[purpose] += float(usd)
    parent = R.alias("parent")
    for edge in edges:
        q = (
            select(R.c.purpose, func.count().label("n"), func.coalesce(func.sum(R.c.cost_usd), 0.0).label("usd"))
            .select_from(outer_first(parent, R, R.c.parent_request_id == parent.c.request_id))
            .where(and_(R.c.purpose != "client", edge.where(parent)))
            .group_by(R.c.purpose)
        )
        for r in rows(engine, q):
            calls[r["purpose"]] += int(r["n"])
            cost[r["purpose"]] += float(r["usd"])
    return [{"purpose": p, "calls": calls[p], "cost_usd": cost[p]} for p in sorted(calls) if calls[p]]


def about_request(engine: Engine, request_id: str) -> dict[str, list[dict[str, Any]]]:
    """What the quality tables hold on one request: its judgement, feedback and the quality calls."""
    judgement = [c for c in J.c if c.name not in ("embedding", "id")]
    return {
        "judgement": rows(engine, select(*judgement).where(J.c.request_id == request_id)),
        "feedback": rows(engine, select(F).where(F.c.request_id == request_id)),
        "quality calls": rows(
            engine,
            select(R.c.request_id, R.c.purpose, R.c.tier, R.c.deployment, R.c.status_code, R.c.cost_usd).where(
                R.c.parent_request_id == request_id
            ),
        ),
    }
