"""Retention: raw ledger rows older than a number of days are deleted; the hourly rollups keep
their totals (the dashboard's charts and figures go back as far as the rollups do, its
per-request tables as far as the rows do). Off unless ``TIERWISE_LEDGER_RETENTION_DAYS`` is set.

Deleted a chunk at a time, each in its own short transaction, so the writer's batches of new
rows are never held up for long; a backlog (retention switched on for a big ledger) is worked
off over a few runs. Quality judgements and feedback stay: the router's adaptation learns from them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from gateway.ledger.models import LedgerEntry

__all__ = ["prune"]

_ROWS = LedgerEntry.__table__  # type: ignore[attr-defined]


def prune(engine: Engine, before: datetime, chunk: int = 10_000, chunks: int = 20) -> int:
    """Delete rows created before ``before``, oldest first, at most ``chunks`` x ``chunk`` of
    them; how many were deleted."""
    deleted = 0
    for _ in range(chunks):
        oldest = select(_ROWS.c.id).where(_ROWS.c.created_at < before).order_by(_ROWS.c.id).limit(chunk)
        with engine.begin() as conn:
            n = conn.execute(delete(_ROWS).where(_ROWS.c.id.in_(oldest.scalar_subquery()))).rowcount
        deleted += n
        if n < chunk:
            break
    return deleted
