"""Clients' feedback on answers: one verdict per request and source, the latest one kept."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gateway.ledger.models import LedgerEntry
from gateway.quality.models import Feedback

__all__ = ["NOT_FOUND", "record_feedback", "request_owner"]

_FEEDBACK = Feedback.__table__  # type: ignore[attr-defined]
_REQUESTS = LedgerEntry.__table__  # type: ignore[attr-defined]
NOT_FOUND = object()  # no such request (a key id may be None: open mode)


def request_owner(engine: Engine, request_id: str) -> object:
    """The key that made a client request (None in open mode), or NOT_FOUND."""
    q = select(_REQUESTS.c.api_key_id).where(
        and_(_REQUESTS.c.request_id == request_id, _REQUESTS.c.purpose == "client")
    )
    with engine.connect() as conn:
        row = conn.execute(q).first()
    return NOT_FOUND if row is None else row[0]


def record_feedback(engine: Engine, request_id: str, source: str, score: float, comment: str | None) -> bool:
    """Insert, or replace the source's earlier verdict on the request; True when it was new."""
    now = datetime.now(UTC)
    values = {"score": score, "comment": comment, "updated_at": now}
    try:
        with engine.begin() as conn:
            conn.execute(insert(_FEEDBACK).values(request_id=request_id, source=source, created_at=now, **values))
        return True
    except IntegrityError:
        with engine.begin() as conn:
            where = and_(_FEEDBACK.c.request_id == request_id, _FEEDBACK.c.source == source)
            conn.execute(update(_FEEDBACK).where(where).values(**values))
        return False
