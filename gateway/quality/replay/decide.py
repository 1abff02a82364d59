"""Deciding as a policy would: the gateway's own resolver, with the policy's router reading the
embeddings the judged samples stored instead of encoding a prompt."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.errors import GatewayError
from gateway.policy.loader import LoadedPolicy
from gateway.quality.replay.judged import F32, JudgedRequest, ReplayError
from gateway.routing.loader import artifact_dir
from gateway.routing.resolve import Resolver
from router.artifact import ArtifactError, load_artifact
from router.core import Decision, Router

__all__ = ["Decided", "decide"]


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
class Decided:
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


def decide(label: str, loaded: LoadedPolicy, judged: list[JudgedRequest]) -> Decided:
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
    return Decided(tiers, why, about, router.version if router is not None else None)
