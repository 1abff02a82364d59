"""What the ledger holds for a replay: the judged samples (with what the router reads) and the
ledger's own figures of the client traffic in the window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, and_, func, select
from sqlalchemy.engine import Engine

from gateway.ledger.models import LedgerEntry
from gateway.quality.models import Judgement

__all__ = ["F32", "JudgedRequest", "ReplayError", "Served", "judged_request", "judged_rows", "served"]

_J: Table = Judgement.__table__  # type: ignore[attr-defined]
_R: Table = LedgerEntry.__table__  # type: ignore[attr-defined]
F32 = npt.NDArray[np.float32]


class ReplayError(Exception):
    """Nothing to replay, or policies that cannot be compared: the message says what to do."""


@dataclass(frozen=True)
class JudgedRequest:
    request_id: str
    model: str  # as the client asked: a route, tier/<name> or a deployment
    weight: float  # 1 / sample rate: the requests this sample stands for
    served_tier: str
    cheaper_tier: str
    reference_tier: str
    adequacy: float | None  # of the cheaper tier's answer; None: the judge could not be read
    encoder: str | None
    embedding: F32 | None
    prompt_chars: int
    prompt_tokens: int
    answer_tokens: dict[str, int]  # tier -> completion tokens of its answer (served and shadow)

    def quality(self, tier: str) -> float | None:
        """What the verdict says of ``tier``'s answer relative to the reference's; None: nothing
        (nor of the reference's, when the judge could not be read: such a sample measured nothing)."""
        if self.adequacy is None:
            return None
        if tier == self.reference_tier:
            return 1.0
        return self.adequacy if tier == self.cheaper_tier else None


@dataclass(frozen=True)
class Served:
    """The ledger's own figures for client traffic in the window: what was served and paid."""

    requests: int
    cost_usd: float
    frontier_cost_usd: float  # the same tokens on the frontier tier (the ledger's base of savings)
    per_tier: dict[str, int]


_COLUMNS = (
    "request_id",
    "served_tier",
    "shadow_tier",
    "cheaper_tier",
    "reference_tier",
    "adequacy",
    "sample_rate",
    "encoder",
    "embedding",
    "prompt_chars",
    "prompt_tokens",
    "served_tokens",
    "shadow_tokens",
)


def _cutoff(since: timedelta | None, now: datetime) -> datetime | None:
    return now - since if since is not None else None


def judged_rows(engine: Engine, since: timedelta | None, now: datetime) -> list[dict[str, Any]]:
    client = and_(_R.c.request_id == _J.c.request_id, _R.c.purpose == "client")
    cols = [_J.c[name] for name in _COLUMNS]
    q = select(*cols, _R.c.requested_model).select_from(_J.outerjoin(_R, client)).order_by(_J.c.id)
    cutoff = _cutoff(since, now)
    if cutoff is not None:
        q = q.where(_J.c.created_at >= cutoff)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def judged_request(row: dict[str, Any]) -> JudgedRequest:
    tokens = {row["shadow_tier"]: int(row["shadow_tokens"]), row["served_tier"]: int(row["served_tokens"])}
    raw = row["embedding"]
    rate = float(row["sample_rate"])
    return JudgedRequest(
        request_id=row["request_id"],
        model=row["requested_model"],
        weight=1.0 / rate if rate > 0 else 1.0,
        served_tier=row["served_tier"],
        cheaper_tier=row["cheaper_tier"],
        reference_tier=row["reference_tier"],
        adequacy=row["adequacy"],
        encoder=row["encoder"],
        embedding=np.frombuffer(raw, dtype=np.float16).astype(np.float32) if raw else None,
        prompt_chars=int(row["prompt_chars"]),
        prompt_tokens=int(row["prompt_tokens"]),
        answer_tokens=tokens,
    )


def served(engine: Engine, since: timedelta | None, now: datetime) -> Served:
    q = (
        select(
            _R.c.tier,
            func.count().label("n"),
            func.coalesce(func.sum(_R.c.cost_usd), 0).label("cost"),
            func.coalesce(func.sum(_R.c.frontier_cost_usd), 0).label("frontier"),
        )
        .where(_R.c.purpose == "client", _R.c.status_code < 400, _R.c.tier.is_not(None), _R.c.api != "embeddings")
        .group_by(_R.c.tier)
    )
    cutoff = _cutoff(since, now)
    if cutoff is not None:
        q = q.where(_R.c.created_at >= cutoff)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    return Served(
        requests=sum(int(r["n"]) for r in rows),
        cost_usd=sum(float(r["cost"]) for r in rows),
        frontier_cost_usd=sum(float(r["frontier"]) for r in rows),
        per_tier={str(r["tier"]): int(r["n"]) for r in rows},
    )
