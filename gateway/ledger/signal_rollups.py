"""Hourly rollups of the ledger's sparse quality signals: failed answer checks, escalation steps,
the gateway's own quality calls and its judged samples, by the request they measured.

Few rows carry them, so their groups are few: (hour, route, tier) and the signal, with no key
(a key's view reads the rows, through the partial indexes of the rows that carry a signal). The
ledger writer stages each batch's signals (:func:`sums`) with its request rollups, merged later
(see ``rollups.merge``), and the quality sampler adds each judgement in the judgement's
transaction (:func:`add_judgement`); :func:`recount` counts them again from the rows. :func:`check_counts` and
:func:`step_counts` are the one reading of the rows' JSON, for the writer and for the
dashboard's reads of rows alike.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, UniqueConstraint, func, select, text
from sqlalchemy.engine import Connection

from gateway.ledger import upsert
from gateway.ledger.models import LedgerEntry
from gateway.quality.models import Feedback, Judgement

__all__ = [
    "ANY_CHECK",
    "CHECKS",
    "FEEDBACK",
    "JUDGED",
    "QUALITY",
    "STEPS",
    "UNKNOWN",
    "UNSPECIFIED",
    "add_feedback",
    "add_judgement",
    "apply",
    "check_counts",
    "columns",
    "feedback_sums",
    "judgement_sums",
    "recount",
    "recount_feedback",
    "recount_judgements",
    "step_counts",
    "sums",
]

_METADATA = MetaData()
_ROWS: Table = LedgerEntry.__table__  # type: ignore[attr-defined]
_JUDGEMENTS: Table = Judgement.__table__  # type: ignore[attr-defined]
_FEEDBACK: Table = Feedback.__table__  # type: ignore[attr-defined]


def _counts(name: str, *dims: str, measures: tuple[str, ...] = ("n",), sums: tuple[str, ...] = ()) -> Table:
    """An hourly table of ``measures`` (counts) and ``sums`` (real numbers) by route, tier, ``dims``."""
    return Table(
        name,
        _METADATA,
        Column("id", Integer, primary_key=True),
        Column("hour", BigInteger, nullable=False),  # Unix seconds of the hour's start, UTC
        Column("route", String(128), nullable=False),
        Column("tier", String(64), nullable=False),
        *(Column(d, String(64), nullable=False) for d in dims),
        *(Column(m, BigInteger, nullable=False) for m in measures),
        *(Column(m, Float, nullable=False) for m in sums),
        UniqueConstraint("hour", "route", "tier", *dims, name=f"uq_{name}_group"),
    )


# Answered client requests whose answer failed ``check`` (ANY_CHECK: failed any), per tier.
CHECKS = _counts("check_hours", "check_name")
# Escalated client requests (step_tier and reason ''), answers asked of each tier on the way
# (reason ''), and answers passed over for the next tier's, once per reason.
STEPS = _counts("step_hours", "step_tier", "reason")
# Quality calls (shadow answers, judge calls) by the hour, route and tier of the request they
# measured; a call whose request the ledger does not hold counts in its own hour, with none.
QUALITY = _counts("quality_hours", "purpose", measures=("calls",), sums=("cost_usd",))
# Judged samples by the hour, route and tier of the request they sampled (see judgement_sums).
JUDGED = Table(
    "judgement_hours",
    _METADATA,
    Column("id", Integer, primary_key=True),
    Column("hour", BigInteger, nullable=False),
    Column("route", String(128), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("cheaper_tier", String(64), nullable=False),
    Column("served_reference", Integer, nullable=False),  # 1: the reference tier's own answer was served
    Column("bin", Integer, nullable=False),  # predicted quality of the cheaper tier x 10 (0-9); -1: none
    *(Column(m, BigInteger, nullable=False) for m in ("n", "n_valid", "win", "tie", "loss", "unparseable")),
    *(Column(m, Float, nullable=False) for m in ("w", "w2", "w_valid", "w2_valid", "wa", "wp")),
    UniqueConstraint(
        "hour", "route", "tier", "cheaper_tier", "served_reference", "bin", name="uq_judgement_hours_group"
    ),
)
# Clients' feedback by the hour, route and tier of the request it judges: verdicts, their
# scores' sum, thumbs up (score 1) and down (score 0). A verdict replaced moves its counts.
FEEDBACK = _counts("feedback_hours", measures=("n", "up", "down"), sums=("score",))
ANY_CHECK = ""
UNKNOWN = "(unknown)"  # a step without a tier
UNSPECIFIED = "(unspecified)"  # a step passed over without its reasons


def _hour(at: datetime) -> int:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return int(at.timestamp()) // 3600 * 3600


def _answered(row: Mapping[str, Any]) -> bool:
    return bool(row["purpose"] == "client" and row["status_code"] < 400)


def _json(text: str | None) -> Any:
    try:
        return orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return None


def check_counts(rows: Iterable[Mapping[str, Any]]) -> Counter[tuple[int, str, str, str]]:
    """(hour, route, tier, check) -> answered requests that failed it, of rows with checks."""
    out: Counter[tuple[int, str, str, str]] = Counter()
    for row in rows:
        if not row["checks"] or not row["tier"] or not _answered(row):
            continue
        found = _json(row["checks"])
        names = sorted({str(v) for v in found}) if isinstance(found, list) else []
        at = (_hour(row["created_at"]), row["route"] or "", row["tier"])
        for name in (*names, ANY_CHECK) if names else ():
            out[(*at, name)] += 1
    return out


def step_counts(rows: Iterable[Mapping[str, Any]]) -> Counter[tuple[int, str, str, str, str]]:
    """(hour, route, tier, step tier, reason) -> count, of rows with escalation steps (see STEPS)."""
    out: Counter[tuple[int, str, str, str, str]] = Counter()
    for row in rows:
        steps = _json(row["steps"]) if _answered(row) else None
        if not isinstance(steps, list) or not steps:
            continue
        at = (_hour(row["created_at"]), row["route"] or "", row["tier"] or "")
        out[(*at, "", "")] += 1
        for i, item in enumerate(steps):
            step = item if isinstance(item, dict) else {}
            tier = str(step["tier"]) if step.get("tier") is not None else UNKNOWN
            out[(*at, tier, "")] += 1
            if i < len(steps) - 1:  # passed over for the next step's tier
                reasons = step.get("reasons")
                for why in [UNSPECIFIED] if reasons is None else reasons:
                    out[(*at, tier, str(why))] += 1
    return out


def _quality_sums(
    rows: Sequence[Mapping[str, Any]], parents: Mapping[str, Mapping[str, Any]]
) -> dict[tuple[int, str, str, str], list[Any]]:
    out: dict[tuple[int, str, str, str], list[Any]] = {}
    for r in rows:
        parent = parents.get(r["parent_request_id"])
        if parent is not None:
            key = (_hour(parent["created_at"]), parent["route"] or "", parent["tier"] or "", r["purpose"])
        else:
            key = (_hour(r["created_at"]), "", "", r["purpose"])
        sums = out.setdefault(key, [0, 0.0])
        sums[0] += 1
        sums[1] += r["cost_usd"]
    return out


def judgement_sums(judgements: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], list[Any]]:
    """(hour, route, tier, cheaper tier, served reference, bin) -> JUDGED's measures, of
    judgements (the table's columns) with their request's ``request_at``, ``route`` and ``tier``.
    A sample stands for 1 / sample_rate requests (its weight w); ``adequacy`` None is a verdict
    the judge did not make readable (counted, measuring nothing)."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for j in judgements:
        w = 1.0 / j["sample_rate"] if j["sample_rate"] > 0 else 1.0
        valid = j["adequacy"] is not None
        scores = _json(j["predicted"]) if valid else None
        p = scores.get(j["cheaper_tier"]) if isinstance(scores, dict) else None
        p = float(p) if isinstance(p, (int, float)) else None
        key = (
            _hour(j["request_at"]),
            j["route"] or "",
            j["tier"] or "",
            j["cheaper_tier"],
            int(j["served_tier"] == j["reference_tier"]),
            min(max(int(p * 10 // 1), 0), 9) if p is not None else -1,
        )
        sums = out.setdefault(key, [0] * 6 + [0.0] * 6)
        verdict = ("win", "tie", "loss", "unparseable").index(j["verdict"]) if j["verdict"] in _VERDICTS else None
        sums[0] += 1
        if verdict is not None:
            sums[2 + verdict] += 1
        sums[6] += w
        sums[7] += w * w
        if valid:
            sums[1] += 1
            sums[8] += w
            sums[9] += w * w
            sums[10] += w * j["adequacy"]
            sums[11] += w * p if p is not None else 0.0
    return out


_VERDICTS = frozenset(("win", "tie", "loss", "unparseable"))


def feedback_sums(
    request: Mapping[str, Any], score: float, was: float | None = None
) -> dict[tuple[Any, ...], list[Any]]:
    """FEEDBACK's change for a verdict of ``score`` on ``request`` (its ``created_at``, ``route``,
    ``tier``), replacing one of ``was`` if given."""
    key = (_hour(request["created_at"]), request["route"] or "", request["tier"] or "")
    new = [1, int(score >= 1), int(score <= 0), score]
    if was is None:
        return {key: new}
    return {key: [0, new[1] - int(was >= 1), new[2] - int(was <= 0), score - was]}


def add_judgement(conn: Connection, judgement: Mapping[str, Any]) -> None:
    """Add one judgement (with its request's ``request_at``, ``route``, ``tier``), in the
    transaction that writes it."""
    _add(conn, JUDGED, judgement_sums([judgement]))


def sums(
    conn: Connection, rows: Sequence[Mapping[str, Any]], signalled: Sequence[Mapping[str, Any]]
) -> dict[str, dict[tuple[Any, ...], list[Any]]]:
    """The signals of ``rows`` (a batch the writer is inserting), by table name: what
    :func:`apply` adds. ``signalled``: those of the rows with checks, steps or a parent request
    (``rollups.fold`` finds them in its pass; few rows carry any). A parent the batch lacks is
    read in ``conn``'s transaction."""
    out: dict[str, dict[tuple[Any, ...], list[Any]]] = {
        CHECKS.name: {k: [n] for k, n in check_counts(r for r in signalled if r["checks"]).items()},
        STEPS.name: {k: [n] for k, n in step_counts(r for r in signalled if r["steps"]).items()},
    }
    own = [r for r in signalled if r["parent_request_id"] is not None and r["purpose"] != "client"]
    if own:
        wanted = {r["parent_request_id"] for r in own}
        parents: dict[str, Mapping[str, Any]] = {
            r["request_id"]: r for r in rows if r["request_id"] in wanted and r["purpose"] == "client"
        }
        if missing := wanted - parents.keys():
            q = select(_ROWS.c.request_id, _ROWS.c.created_at, _ROWS.c.route, _ROWS.c.tier)
            parents |= {r.request_id: r._mapping for r in conn.execute(q.where(_ROWS.c.request_id.in_(missing)))}
        out[QUALITY.name] = _quality_sums(own, parents)
    return {str(name): found for name, found in out.items() if found}  # str: a table's name is a subclass


def apply(conn: Connection, found: Mapping[str, Mapping[tuple[Any, ...], list[Any]]]) -> None:
    """Add :func:`sums`' counts (of one batch or many, added up) to their tables, groups in key
    order (replicas adding to the same groups lock them in one order: no deadlock)."""
    for name, table_sums in found.items():
        _add(conn, _BY_NAME[name], dict(sorted(table_sums.items())))


_BY_NAME = {t.name: t for t in (CHECKS, STEPS, QUALITY)}


@functools.cache
def columns(table: Table) -> tuple[list[str], list[str]]:
    """A rollup table's group columns (its unique key, in order) and its measures."""
    dims = [c.name for c in _unique(table).columns]
    return dims, [c.name for c in table.c if c.name != "id" and c.name not in dims]


def _unique(table: Table) -> UniqueConstraint:
    return next(c for c in table.constraints if isinstance(c, UniqueConstraint))


def _add(conn: Connection, table: Table, sums: Mapping[tuple[Any, ...], list[Any]]) -> None:
    if sums:
        dims, measures = columns(table)
        upsert.add(conn, table, (*dims, *measures), dims, measures, [(*k, *m) for k, m in sums.items()])


def recount(conn: Connection, keep_before: int | None) -> None:
    """Count the signals again from the rows, from ``keep_before`` (Unix seconds) on (None: all);
    earlier hours keep theirs (retention deleted their rows)."""
    for table in (CHECKS, STEPS, QUALITY):
        conn.execute(table.delete().where(table.c.hour >= keep_before) if keep_before is not None else table.delete())
    since = datetime.fromtimestamp(keep_before, UTC) if keep_before is not None else None
    cols = [_ROWS.c[c] for c in ("created_at", "route", "tier", "purpose", "status_code", "checks", "steps")]
    for column, table, count in ((_ROWS.c.checks, CHECKS, check_counts), (_ROWS.c.steps, STEPS, step_counts)):
        q = select(*cols).where(column.is_not(None))
        q = q if since is None else q.where(_ROWS.c.created_at >= since)
        found = conn.execute(q, execution_options={"yield_per": 10_000})
        total: Counter[Any] = Counter()
        mappings = (cast(Mapping[str, Any], r._mapping) for r in found)
        while batch := list(itertools.islice(mappings, 10_000)):
            total.update(count(batch))
        _add(conn, table, {k: [n] for k, n in total.items()})
    recount_judgements(conn, since)
    recount_feedback(conn, since)
    hour = (
        "(FLOOR(EXTRACT(EPOCH FROM COALESCE(p.created_at, c.created_at)) / 3600) * 3600)::bigint"
        if conn.dialect.name == "postgresql"
        else "(CAST(strftime('%s', COALESCE(p.created_at, c.created_at)) AS INTEGER) / 3600 * 3600)"
    )
    route, tier = "COALESCE(p.route, '')", "COALESCE(p.tier, '')"
    conn.execute(
        text(
            f"INSERT INTO quality_hours (hour, route, tier, purpose, calls, cost_usd) "
            f"SELECT {hour}, {route}, {tier}, c.purpose, COUNT(*), SUM(c.cost_usd) "
            "FROM requests c LEFT JOIN requests p ON p.request_id = c.parent_request_id "
            "WHERE c.parent_request_id IS NOT NULL AND c.purpose != 'client' "
            + (f"AND {hour} >= :since " if keep_before is not None else "")
            + f"GROUP BY {hour}, {route}, {tier}, c.purpose"
        ),
        {"since": keep_before} if keep_before is not None else {},
    )


def add_feedback(conn: Connection, sums: Mapping[tuple[Any, ...], list[Any]]) -> None:
    """Add feedback_sums' change, in the transaction that writes the verdict."""
    _add(conn, FEEDBACK, sums)


def recount_feedback(conn: Connection, since: datetime | None = None) -> None:
    """Count the feedback again, that on requests from ``since`` on (None: all); a verdict on a
    request the ledger no longer holds counts in its own hour, with no route or tier."""
    start = int(since.timestamp()) if since is not None else None
    conn.execute(FEEDBACK.delete().where(FEEDBACK.c.hour >= start) if start is not None else FEEDBACK.delete())
    f = _FEEDBACK
    at = func.coalesce(_ROWS.c.created_at, f.c.created_at)
    q = select(at.label("created_at"), _ROWS.c.route, _ROWS.c.tier, f.c.score).select_from(
        f.outerjoin(_ROWS, _ROWS.c.request_id == f.c.request_id)
    )
    found = conn.execute(q.where(at >= since) if since is not None else q, execution_options={"yield_per": 10_000})
    total: dict[tuple[Any, ...], list[Any]] = {}
    for r in found:
        for key, sums in feedback_sums(cast(Mapping[str, Any], r._mapping), r.score).items():
            mine = total.setdefault(key, [0, 0, 0, 0.0])
            for i, v in enumerate(sums):
                mine[i] += v
    _add(conn, FEEDBACK, total)


def recount_judgements(conn: Connection, since: datetime | None = None) -> None:
    """Count the judged samples again, those of requests from ``since`` on (None: all); a
    judgement whose request the ledger no longer holds counts in its own hour, with no route."""
    start = int(since.timestamp()) if since is not None else None
    conn.execute(JUDGED.delete().where(JUDGED.c.hour >= start) if start is not None else JUDGED.delete())
    j = _JUDGEMENTS
    at = func.coalesce(_ROWS.c.created_at, j.c.created_at)
    q = select(
        *(j.c[c] for c in ("cheaper_tier", "served_tier", "reference_tier", "verdict", "adequacy", "sample_rate")),
        j.c.predicted,
        at.label("request_at"),
        _ROWS.c.route,
        func.coalesce(_ROWS.c.tier, j.c.served_tier).label("tier"),
    ).select_from(j.outerjoin(_ROWS, _ROWS.c.request_id == j.c.request_id))
    found = conn.execute(q.where(at >= since) if since is not None else q, execution_options={"yield_per": 10_000})
    total: dict[tuple[Any, ...], list[Any]] = {}
    mappings = (cast(Mapping[str, Any], r._mapping) for r in found)
    while batch := list(itertools.islice(mappings, 10_000)):
        for key, sums in judgement_sums(batch).items():
            mine = total.setdefault(key, [0] * 6 + [0.0] * 6)
            for i, v in enumerate(sums):
                mine[i] += v
    _add(conn, JUDGED, total)
