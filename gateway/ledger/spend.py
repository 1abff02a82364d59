"""What each key has spent, from the ledger: the truth budget counters start from."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from gateway.ledger.models import LedgerEntry

__all__ = ["spend_by_key"]


def spend_by_key(engine: Engine, now: float) -> list[tuple[str, float, float]]:
    """(key id, spent today, spent this month), UTC days and months, for keys that spent this month."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    t = LedgerEntry.__table__  # type: ignore[attr-defined]
    q = (
        select(
            t.c.api_key_id,
            func.coalesce(func.sum(case((t.c.created_at >= day, t.c.cost_usd), else_=0.0)), 0.0),
            func.coalesce(func.sum(t.c.cost_usd), 0.0),
        )
        .where(and_(t.c.api_key_id.is_not(None), t.c.created_at >= month))
        .group_by(t.c.api_key_id)
    )
    with engine.connect() as conn:
        return [(str(k), float(d), float(m)) for k, d, m in conn.execute(q)]
