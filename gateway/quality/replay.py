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

import asyncio
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, and_, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import GatewayError
from gateway.ledger.models import LedgerEntry
from gateway.policy.loader import LoadedPolicy
from gateway.policy.pricing import cost_usd
from gateway.quality.models import Judgement
from gateway.quality.stats import Z95, Estimate, Sums
from gateway.routing.loader import artifact_dir
from gateway.routing.resolve import Resolver
from gateway.usage import Usage
from router.artifact import ArtifactError, load_artifact
from router.core import Decision, Router

__all__ = ["Interval", "Replayed", "ReplayError", "Report", "Served", "replay"]

_J: Table = Judgement.__table__  # type: ignore[attr-defined]
_R: Table = LedgerEntry.__table__  # type: ignore[attr-defined]
F32 = npt.NDArray[np.float32]


class ReplayError(Exception):
    """Nothing to replay, or policies that cannot be compared: the message says what to do."""


# -- what the ledger holds -------------------------------------------------------------------------
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


def _judged(engine: Engine, since: timedelta | None, now: datetime) -> list[dict[str, Any]]:
    client = and_(_R.c.request_id == _J.c.request_id, _R.c.purpose == "client")
    cols = [_J.c[name] for name in _COLUMNS]
    q = select(*cols, _R.c.requested_model).select_from(_J.outerjoin(_R, client)).order_by(_J.c.id)
    cutoff = _cutoff(since, now)
    if cutoff is not None:
        q = q.where(_J.c.created_at >= cutoff)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def _request(row: dict[str, Any]) -> JudgedRequest:
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


def _served(engine: Engine, since: timedelta | None, now: datetime) -> Served:
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


# -- deciding as a policy would ----------------------------------------------------------------------
class _NotEmbedded(Exception):
    """The sample's prompt was not embedded by the encoder this artifact reads."""


class _StoredEmbeddings:
    """An encoder that knows only the judged prompts: their stored embeddings, by request id (the
    replay hands the resolver the request id for the prompt)."""

    inline = True

    def __init__(self, name: str, dim: int, vectors: dict[str, F32]) -> None:
        self.name, self.dim, self.vectors = name, dim, vectors

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> F32:
        try:
            return np.stack([self.vectors[t] for t in texts])
        except KeyError as exc:
            raise _NotEmbedded(str(exc)) from None


class _ReplayRouter:
    """The artifact's router on stored features: the resolver measures the length of the request
    id it was given for a prompt; the router gets the stored length of the prompt itself."""

    def __init__(self, router: Router, lengths: dict[str, int], embedded: int) -> None:
        self.router, self.lengths = router, lengths
        self.embedded = embedded  # samples stored with an embedding this artifact reads

    @property
    def version(self) -> str:
        return self.router.version

    @property
    def tiers(self) -> list[str]:
        return self.router.tiers

    @property
    def encoder_name(self) -> str:
        return self.router.encoder_name

    def decide(
        self,
        text: str,
        *,
        length: int | None = None,
        cost_weight: float | None = None,
        allowed: Sequence[str] | None = None,
        cost_scale: Sequence[float] | None = None,
    ) -> Decision:
        return self.router.decide(
            text, length=self.lengths[text], cost_weight=cost_weight, allowed=allowed, cost_scale=cost_scale
        )

    def cost_scale(self, relative_call_cost: Mapping[str, float | None]) -> list[float]:
        return self.router.cost_scale(relative_call_cost)

    def decides_inline(self, text: str, length: int | None = None) -> bool:
        return True

    def features(self, texts: Sequence[str], *, lengths: Sequence[int | None] | None = None) -> F32:
        return self.router.features(texts, lengths=lengths)


@dataclass
class _Decided:
    tiers: list[str | None]  # per sample; None: could not be decided (see ``why``)
    why: Counter[str]
    router: str  # what decided, for the report
    version: str | None  # the artifact's


def _router(loaded: LoadedPolicy, judged: list[JudgedRequest]) -> tuple[_ReplayRouter | None, str]:
    """The policy's router on the stored embeddings, and a line saying what it is."""
    path = artifact_dir(loaded)
    cfg = loaded.policy.router
    if path is None or cfg is None:
        return None, "router off"
    try:
        artifact = load_artifact(path)
    except (ArtifactError, OSError) as exc:
        raise ReplayError(f"{loaded.source}: router artifact {path}: {exc}") from exc
    dim = artifact.models.quality_w.shape[1] - 1
    vectors = {
        r.request_id: r.embedding
        for r in judged
        if r.embedding is not None and r.encoder == artifact.encoder and len(r.embedding) == dim
    }
    # A two-stage artifact replays on its second stage: the stored embeddings are that encoder's.
    router = Router(artifact, _StoredEmbeddings(artifact.encoder, dim, vectors), cache_size=0)
    weight = cfg.cost_weight if cfg.cost_weight is not None else router.default_cost_weight
    stages = " (its second stage)" if artifact.meta.get("first_stage") else ""
    about = f"{path.name}{stages}, cost weight {weight:.4g}"
    return _ReplayRouter(router, {r.request_id: r.prompt_chars for r in judged}, len(vectors)), about


def _decide(label: str, loaded: LoadedPolicy, judged: list[JudgedRequest]) -> _Decided:
    router, about = _router(loaded, judged)
    encoder = router.router.encoder_name if router is not None else None
    resolver = Resolver(router, available=lambda _policy, _tier: True)
    why: Counter[str] = Counter()
    unreadable = 0

    async def run() -> list[str | None]:
        nonlocal unreadable
        out: list[str | None] = []
        for r in judged:
            try:
                res = await resolver.resolve(loaded, r.model, [{"role": "user", "content": r.request_id}])
            except _NotEmbedded:
                why[f"embedded by {r.encoder or 'no encoder'}; the artifact reads {encoder}"] += 1
                unreadable += 1
                out.append(None)
            except GatewayError as exc:
                why[f"model {r.model!r}: {exc}"] += 1
                out.append(None)
            else:
                out.append(res.tier)
        return out

    tiers = asyncio.run(run())
    if router is not None and router.embedded == 0 and unreadable:
        stored = sorted({r.encoder for r in judged if r.encoder is not None})
        raise ReplayError(
            f"{label} ({loaded.source}): its router ({about}) reads embeddings of {encoder}, the judged samples hold "
            f"{', '.join(stored) or 'none'} (the encoder serving when they were judged): replay a router "
            "artifact on the same encoder (e.g. one `tierwise router adapt --from-ledger` wrote)"
        )
    return _Decided(tiers, why, about, router.version if router is not None else None)


# -- estimates ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def _ratio(w: npt.NDArray[np.float64], x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> Interval:
    """Σwx / Σwy with a 95% interval by the delta method (linearised around the ratio)."""
    r = float((w * x).sum() / (w * y).sum())
    se = float(math.sqrt(((w * (x - r * y)) ** 2).sum()) / (w * y).sum())
    return Interval(r, r - Z95 * se, r + Z95 * se)


@dataclass(frozen=True)
class Replayed:
    label: str
    source: str
    router: str
    router_version: str | None
    frontier: str  # the policy's top tier: the base of its savings
    shares: dict[str, float]  # tier -> weighted share of the replayed requests
    cost_per_1k: Interval  # USD per 1,000 requests
    frontier_cost_per_1k: float  # the same requests all on the top tier, at the policy's prices
    saved: Interval  # against all on the top tier
    quality: Estimate | None  # relative to the reference tier, where the judged sample tells
    quality_bounds: tuple[float, float]  # as if every unknown were inadequate .. adequate
    judged: int  # samples whose verdict covers the chosen tier
    unknown: int  # samples moved to a tier not judged for them (or a verdict not read)


@dataclass(frozen=True)
class _Quality:
    known: Sums  # samples whose verdict covers the chosen tier
    unknown_w: float
    unknown: int

    @property
    def bounds(self) -> tuple[float, float]:
        total = self.known.w + self.unknown_w
        return self.known.wx / total, (self.known.wx + self.unknown_w) / total


def _quality(judged: list[JudgedRequest], tiers: list[str]) -> _Quality:
    known, unknown_w, unknown = Sums(), 0.0, 0
    for r, t in zip(judged, tiers, strict=True):
        q = r.quality(t)
        if q is None:
            unknown_w += r.weight
            unknown += 1
        else:
            known += Sums(1, r.weight, r.weight * r.weight, r.weight * q)
    return _Quality(known, unknown_w, unknown)


def _estimate(
    label: str, loaded: LoadedPolicy, judged: list[JudgedRequest], tiers: list[str], decided: _Decided
) -> Replayed:
    policy = loaded.policy
    top = policy.frontier.name
    price = {t.name: loaded.price(t.deployments[0].name) for t in policy.tiers}

    def cost(r: JudgedRequest, tier: str) -> float:
        answer = r.answer_tokens.get(tier, r.answer_tokens[r.served_tier])
        return cost_usd(price[tier], Usage(r.prompt_tokens, answer))

    w = np.array([r.weight for r in judged])
    c = np.array([cost(r, t) for r, t in zip(judged, tiers, strict=True)])
    f = np.array([cost(r, top) for r in judged])
    relative = _ratio(w, c, f) if f.sum() > 0 else Interval(1.0, 1.0, 1.0)
    quality = _quality(judged, tiers)
    chosen = np.array(tiers)
    return Replayed(
        label=label,
        source=str(loaded.source),
        router=decided.router,
        router_version=decided.version,
        frontier=top,
        shares={t.name: float(w[chosen == t.name].sum() / w.sum()) for t in policy.tiers},
        cost_per_1k=_ratio(w, c * 1000, np.ones_like(w)),
        frontier_cost_per_1k=float((w * f).sum() / w.sum() * 1000),
        saved=Interval(1 - relative.mean, 1 - relative.high, 1 - relative.low),
        quality=quality.known.estimate(),
        quality_bounds=quality.bounds,
        judged=quality.known.n,
        unknown=quality.unknown,
    )


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
        rows = _judged(engine, since, now)
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
            judged.append(_request(row))
    decided = {label: _decide(label, loaded, judged) for label, loaded in policies}
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
        served=_served(engine, since, now),
        served_quality=_quality(replayed, [r.served_tier for r in replayed]).known.estimate(),
        policies=[
            _estimate(label, loaded, replayed, [decided[label].tiers[i] or "" for i in keep], decided[label])
            for label, loaded in policies
        ],
        skipped=dict(skipped),
    )
