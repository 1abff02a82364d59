"""Judged samples from the ledger's database, in the shape ``router.adapt`` learns from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.engine import Engine

from gateway.quality.models import Judgement
from router.adapt import JudgedSamples, stored_features
from router.artifact import Artifact

__all__ = ["LedgerSamples", "ledger_samples", "parse_since"]

_T = Judgement.__table__  # type: ignore[attr-defined]


@dataclass
class LedgerSamples:
    samples: JudgedSamples
    rows: int  # judgements read
    used: int  # ...that could be learned from
    other_encoder: int  # embedded by an encoder the base artifact does not use
    unparseable: int  # the judge's verdicts could not be read
    weights: npt.NDArray[np.float64]  # 1 / sample rate: how much traffic each sample stands for


def parse_since(value: str) -> timedelta:
    """``30d``, ``12h``, ``90m``."""
    unit = {"d": "days", "h": "hours", "m": "minutes"}.get(value[-1:])
    if unit is None or not value[:-1].isdigit():
        raise ValueError(f"--since: expected a number and d/h/m (e.g. 30d), got {value!r}")
    return timedelta(**{unit: int(value[:-1])})


def ledger_samples(engine: Engine, tiers: list[str], base: Artifact, since: timedelta | None = None) -> LedgerSamples:
    """Every readable judgement since then: the cheaper tier's adequacy (the reference, the top
    tier, is adequate by definition); other tiers unobserved (NaN); weights 1 / sample rate."""
    q = select(_T).order_by(_T.c.id)
    if since is not None:
        q = q.where(_T.c.created_at >= datetime.now(UTC) - since)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    keep, other, unparseable = [], 0, 0
    for row in rows:
        if row["adequacy"] is None:
            unparseable += 1
        elif row["encoder"] != base.encoder or row["embedding"] is None:
            other += 1
        elif row["cheaper_tier"] in tiers and row["reference_tier"] in tiers:
            keep.append(row)
    dim = base.models.quality_w.shape[1] - 1
    emb = np.zeros((len(keep), dim), np.float32)
    scores = np.full((len(keep), len(tiers)), np.nan)
    costs = np.full((len(keep), len(tiers)), np.nan)
    for i, row in enumerate(keep):
        emb[i] = np.frombuffer(row["embedding"], dtype=np.float16)[:dim]
        cheap, ref = tiers.index(row["cheaper_tier"]), tiers.index(row["reference_tier"])
        scores[i, cheap] = row["adequacy"]
        scores[i, ref] = 1.0
        served = tiers.index(row["served_tier"])
        shadow = tiers.index(row["shadow_tier"])
        costs[i, served] = row["served_cost_usd"]
        costs[i, shadow] = row["shadow_cost_usd"]
    weights = np.array([1.0 / max(row["sample_rate"], 1e-6) for row in keep], dtype=np.float64)
    features = stored_features(emb, [row["prompt_chars"] for row in keep], base.encoder, base)
    return LedgerSamples(
        samples=JudgedSamples(features, scores, weights=weights, costs=costs),
        rows=len(rows),
        used=len(keep),
        other_encoder=other,
        unparseable=unparseable,
        weights=weights,
    )
