"""Clients' feedback on answers: one verdict per request and source, the latest one kept, and
its count in the rollups (by the request's hour, route and tier) in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gateway.ledger import signal_rollups
from gateway.ledger.models import LedgerEntry
from gateway.quality.models import Feedback

__all__ = ["find_request", "record_feedback"]

_FEEDBACK = Feedback.__table__  # type: ignore[attr-defined]
_REQUESTS = LedgerEntry.__table__  # type: ignore[attr-defined]
_SEEN = (_REQUESTS.c.api_key_id, _REQUESTS.c.created_at, _REQUESTS.c.route, _REQUESTS.c.tier)


def find_request(engine: Engine, request_id: str) -> dict[str, Any] | None:
    """A client request's key (None in open mode), time, route and tier; None if there is none."""
    q = select(*_SEEN).where(and_(_REQUESTS.c.request_id == request_id, _REQUESTS.c.purpose == "client"))
    with engine.connect() as conn:
        row = conn.execute(q).first()
    return None if row is None else dict(row._mapping)


def record_feedback(
    engine: Engine, request_id: str, source: str, score: float, comment: str | None, request: Mapping[str, Any]
) -> bool:
    """Insert, or replace the source's earlier verdict on the request; True when it was new.
    ``request``: find_request's answer for it."""
    now = datetime.now(UTC)
    values = {"score": score, "comment": comment, "updated_at": now}
    try:
        with engine.begin() as conn:
            conn.execute(insert(_FEEDBACK).values(request_id=request_id, source=source, created_at=now, **values))
            signal_rollups.add_feedback(conn, signal_rollups.feedback_sums(request, score))
        return True
    except IntegrityError:
        with engine.begin() as conn:
            where = and_(_FEEDBACK.c.request_id == request_id, _FEEDBACK.c.source == source)
            was = conn.execute(select(_FEEDBACK.c.score).where(where).with_for_update()).scalar_one()
            conn.execute(update(_FEEDBACK).where(where).values(**values))
            signal_rollups.add_feedback(conn, signal_rollups.feedback_sums(request, score, was))
        return False
