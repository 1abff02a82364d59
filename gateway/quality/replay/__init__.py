"""What-if over logged traffic: how another policy would have routed, what it would have cost
and how its answers would have been judged, on the requests the gateway judged.

A judged sample stored what the router reads (the encoder's embedding of the prompt and the
prompt's length), the tokens of two tiers' answers, and the judge's verdict on the cheaper one
against the reference (top) tier. A policy is replayed by asking the gateway's own resolver —
its routes, tier map, prices and cost weight, the router's decision rule — with a router that
reads the stored embedding instead of encoding a prompt. Each sample then stands for
``1 / sample_rate`` requests (the rate in force when it was taken):

* cost per 1k requests: the prompt's tokens and those of the chosen tier's answer where that
  tier answered it (served or shadow), else the served answer's, at the policy's prices (each
  tier's first deployment, as the router prices tiers);
* quality relative to the reference tier: 1 where the reference is chosen, the judged adequacy
  where the judged cheaper tier is, and unknown where a tier that was not judged for the request
  is. Unknowns are counted and bounded (as if all inadequate .. all adequate), never guessed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.policy.loader import LoadedPolicy
from gateway.quality.replay.decide import decide
from gateway.quality.replay.estimate import Interval, Replayed, estimate, quality_of
from gateway.quality.replay.judged import ReplayError, Served, judged_request, judged_rows, served
from gateway.quality.stats import Estimate

__all__ = ["Interval", "Replayed", "ReplayError", "Report", "Served", "replay"]


@dataclass
class Report:
    since: str | None
    judgements: int  # read in the window
    replayed: int  # ...re-decided by every policy
    reference: list[str]  # the tiers the verdicts are relative to
    sample_rates: list[float]
    served: Served
    served_quality: Estimate | None  # of the answers the judged requests were given
    policies: list[Replayed]
    skipped: dict[str, int] = field(default_factory=dict)  # why a judgement was not replayed -> how many

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def replay(
    engine: Engine,
    policies: list[tuple[str, LoadedPolicy]],
    *,
    since: timedelta | None = None,
    since_label: str | None = None,
    now: datetime | None = None,
) -> Report:
    """Replay the judged requests of the window under each policy (the first is the current one,
    whose tiers every other must share)."""
    now = now or datetime.now(UTC)
    (_, first), *others = policies
    tiers = [t.name for t in first.policy.tiers]
    for _, loaded in others:
        theirs = [t.name for t in loaded.policy.tiers]
        if sorted(theirs) != sorted(tiers):
            raise ReplayError(
                f"{loaded.source}: tiers {theirs} do not match the current policy's {tiers} ({first.source}): "
                "replay compares policies over the same tiers (their order, deployments and prices may differ)"
            )
    try:
        rows = judged_rows(engine, since, now)
    except SQLAlchemyError as exc:
        raise ReplayError(f"cannot read judged samples from the ledger: {getattr(exc, 'orig', None) or exc}") from exc
    window = f" since {since_label}" if since_label else ""
    if not rows:
        raise ReplayError(
            f"no judged samples in the ledger{window}: set quality.sample_rate and a judge in the policy, "
            "and let traffic through"
        )
    skipped: Counter[str] = Counter()
    judged = []
    for row in rows:
        if row["requested_model"] is None:
            skipped["no client request in the ledger"] += 1
        elif not {row["served_tier"], row["shadow_tier"]} <= set(tiers):
            skipped["judged on other tiers"] += 1
        else:
            judged.append(judged_request(row))
    decided = {label: decide(label, loaded, judged) for label, loaded in policies}
    keep = [i for i in range(len(judged)) if all(d.tiers[i] is not None for d in decided.values())]
    for label, d in decided.items():
        for why, n in d.why.items():
            skipped[f"{label}: {why}"] += n
    if not keep:
        raise ReplayError(
            f"none of the {len(rows)} judged samples{window} could be replayed: "
            + "; ".join(f"{n} {why}" for why, n in skipped.most_common())
        )
    replayed = [judged[i] for i in keep]
    return Report(
        since=since_label,
        judgements=len(rows),
        replayed=len(replayed),
        reference=sorted({r.reference_tier for r in replayed}),
        sample_rates=sorted({round(1 / r.weight, 6) for r in replayed}),
        served=served(engine, since, now),
        served_quality=quality_of(replayed, [r.served_tier for r in replayed]).known.estimate(),
        policies=[
            estimate(label, loaded, replayed, [decided[label].tiers[i] or "" for i in keep], decided[label])
            for label, loaded in policies
        ],
        skipped=dict(skipped),
    )
