"""The dashboard's reads of the quality signals: judged samples, feedback, failed answer checks,
escalations, and what the gateway's own quality calls cost. Aggregates stay in SQL (SQLite and
PostgreSQL alike); Python only adds up the few grouped rows that come back.

Judged samples, feedback and checks are selected through the client request they belong to, so
the sidebar's filters (window, route, tier, key) apply to them as to the traffic figures.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement

from dashboard.dialect import epoch_bucket, floor_int, json_item, json_key_float, json_length
from dashboard.queries import REQUESTS, Filters, rows
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
    "judged",
    "judged_over_time",
    "quality_cost",
]

R = REQUESTS
J: Table = Judgement.__table__  # type: ignore[attr-defined]
F: Table = Feedback.__table__  # type: ignore[attr-defined]

# A sample stands for 1 / sample_rate requests.
_W = case((J.c.sample_rate > 0, 1.0 / J.c.sample_rate), else_=1.0)
_VALID = J.c.adequacy.is_not(None)
_SERVED_REFERENCE = J.c.served_tier == J.c.reference_tier


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


def _judged_query(engine: Engine, f: Filters, bucket_s: int | None) -> list[dict[str, Any]]:
    keys: list[Any] = [J.c.cheaper_tier, case((_SERVED_REFERENCE, 1), else_=0).label("served_reference")]
    if bucket_s is not None:
        keys.insert(0, epoch_bucket(engine, R.c.created_at, bucket_s).label("bucket"))
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
        .select_from(J.join(R, R.c.request_id == J.c.request_id))
        .where(f.where(R))
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


def judged(engine: Engine, f: Filters) -> Judged:
    out = Judged()
    for r in _judged_query(engine, f, None):
        _add(out, r)
    return out


def judged_over_time(engine: Engine, f: Filters, bucket_s: int) -> dict[int, Judged]:
    out: dict[int, Judged] = defaultdict(Judged)
    for r in _judged_query(engine, f, bucket_s):
        _add(out[int(r["bucket"])], r)
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Calibration:
    bin: int  # predicted quality in [bin / bins, (bin + 1) / bins)
    predicted: float  # the weighted mean prediction in the bin
    adequacy: Sums


def calibration(engine: Engine, f: Filters, bins: int = 10) -> list[Calibration]:
    """The router's predicted quality for the judged (cheaper) tier, binned, against how often
    the judge found that tier adequate. Samples served without the router are left out."""
    p = json_key_float(engine, J.c.predicted, J.c.cheaper_tier)
    b = floor_int(engine, p * bins).label("bin")
    q = (
        select(
            b,
            func.count().label("n"),
            func.sum(_W).label("w"),
            func.sum(_W * _W).label("w2"),
            func.sum(_W * J.c.adequacy).label("wa"),
            func.sum(_W * p).label("wp"),
        )
        .select_from(J.join(R, R.c.request_id == J.c.request_id))
        .where(and_(f.where(R), J.c.predicted.is_not(None), _VALID, p.is_not(None)))
        .group_by(b)
    )
    merged: dict[int, tuple[Sums, float]] = {}
    for r in rows(engine, q):
        k = min(max(int(r["bin"]), 0), bins - 1)  # a prediction of exactly 1.0 joins the top bin
        s, wp = merged.get(k, (Sums(), 0.0))
        merged[k] = (s + Sums(int(r["n"]), float(r["w"]), float(r["w2"]), float(r["wa"])), wp + float(r["wp"]))
    return [Calibration(k, wp / s.w, s) for k, (s, wp) in sorted(merged.items()) if s.w > 0]


def feedback_by_tier(engine: Engine, f: Filters) -> list[dict[str, Any]]:
    """Clients' verdicts per tier that answered: how many, their mean, thumbs up and down."""
    q = (
        select(
            R.c.tier,
            func.count().label("n"),
            func.count(func.distinct(F.c.request_id)).label("requests"),
            func.avg(F.c.score).label("mean"),
            _sum_if(F.c.score >= 1, 1).label("up"),
            _sum_if(F.c.score <= 0, 1).label("down"),
        )
        .select_from(F.join(R, R.c.request_id == F.c.request_id))
        .where(f.where(R))
        .group_by(R.c.tier)
    )
    return rows(engine, q)


@dataclass
class CheckFailures:
    answered: Counter[str] = field(default_factory=Counter)  # tier -> answered requests
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tier, check) -> failures
    any_failed: Counter[str] = field(default_factory=Counter)  # tier -> answers failing any check


def check_failures(engine: Engine, f: Filters) -> CheckFailures:
    """Failed answer checks per tier. Rows are grouped by their list of failed checks (few
    distinct lists), so whatever check names the gateway writes are counted."""
    q = (
        select(R.c.tier, R.c.checks, func.count().label("n"))
        .where(and_(f.where(R), R.c.status_code < 400, R.c.tier.is_not(None)))
        .group_by(R.c.tier, R.c.checks)
    )
    out = CheckFailures()
    for r in rows(engine, q):
        tier, n = str(r["tier"]), int(r["n"])
        out.answered[tier] += n
        names = _json_list(r["checks"])
        for name in names:
            out.failed[(tier, name)] += n
        if names:
            out.any_failed[tier] += n
    return out


def _json_list(text: str | None) -> list[str]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return sorted({str(v) for v in value}) if isinstance(value, list) else []


@dataclass
class Escalations:
    tried: Counter[str] = field(default_factory=Counter)  # tier -> answers asked of it
    escalated: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tier, reason) -> moved on


_UNKNOWN = "(unknown)"


def escalations(engine: Engine, f: Filters) -> Escalations:
    """How often each tier's answer was passed over for the next tier's, and why.

    ``steps`` lists every answer a request paid for, each with its tier and, when the gateway
    moved on from it, its ``reasons`` (the failed checks; a step moved on for two counts for
    both). A request without steps tried its tier once.
    """
    out = Escalations()
    base = and_(f.where(R), R.c.status_code < 400)
    plain = select(R.c.tier, func.count()).where(and_(base, R.c.steps.is_(None))).group_by(R.c.tier)
    with engine.connect() as conn:
        for tier, n in conn.execute(plain):
            out.tried[str(tier) if tier is not None else _UNKNOWN] += int(n)
        length = json_length(engine, R.c.steps)
        longest = conn.execute(select(func.max(length)).where(and_(base, R.c.steps.is_not(None)))).scalar()
        for i in range(int(longest or 0)):
            tier, reasons = json_item(engine, R.c.steps, i, "tier"), json_item(engine, R.c.steps, i, "reasons")
            moved_on = case((length > i + 1, 1), else_=0)
            q = (
                select(tier, reasons, moved_on, func.count())
                .where(and_(base, R.c.steps.is_not(None), length > i))
                .group_by(tier, reasons, moved_on)
            )
            for t, why, moved, n in conn.execute(q):
                name = str(t) if t is not None else _UNKNOWN
                out.tried[name] += int(n)
                if moved:
                    for why_one in json.loads(why) if why else ["(unspecified)"]:
                        out.escalated[(name, str(why_one))] += int(n)
    return out


def quality_cost(engine: Engine, f: Filters) -> list[dict[str, Any]]:
    """The gateway's own shadow and judge calls for the selected requests: how many, what they cost."""
    parent = R.alias("parent")
    q = (
        select(R.c.purpose, func.count().label("calls"), func.coalesce(func.sum(R.c.cost_usd), 0.0).label("cost_usd"))
        .select_from(R.join(parent, parent.c.request_id == R.c.parent_request_id))
        .where(and_(R.c.purpose != "client", f.where(parent)))
        .group_by(R.c.purpose)
    )
    return rows(engine, q)


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
