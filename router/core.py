"""The router: one scoring method (predicted quality and cost per tier) plus one knob.

Decision rule: pick the tier that maximises ``quality - cost_weight * cost``, where quality
is the tier's predicted chance of a good answer and cost is its predicted cost relative to an
average frontier call. ``cost_weight = 0`` always takes the best predicted tier; a large one
always the cheapest. ``tierwise router calibrate`` turns a policy target into this number.

Two stages (an artifact with a ``first_stage``): a cheap router decides when the utility of its
best tier beats the runner-up by at least ``margin``; only the uncertain rest pays for the
second stage's encoder. Both stages are trained on the same data with the same recipe.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from router.artifact import Artifact, ArtifactError, load_artifact
from router.data import prompt_for_routing
from router.encoders import Encoder, build_encoder
from router.estimators import F32, text_features

__all__ = ["Decision", "Router", "choose", "choose_two_stage", "margins", "two_stage_preference"]

log = logging.getLogger("tierwise.router")


@dataclass(frozen=True)
class Decision:
    tier: str
    scores: dict[str, float]  # predicted quality per tier
    costs: dict[str, float]  # predicted relative cost per tier
    version: str
    margin: float = 0.0  # utility of the chosen tier over the runner-up
    stage: int = 1  # which stage of a two-stage router decided


def _utility(quality: F32, cost: F32, cost_weight: float, allowed: Sequence[int] | None) -> F32:
    utility: F32 = quality - np.float32(cost_weight) * cost
    if allowed is not None and len(allowed) < quality.shape[1]:
        mask = np.full(quality.shape[1], -np.inf, dtype=np.float32)
        mask[list(allowed)] = 0.0
        utility = utility + mask
    return utility


def choose(quality: F32, cost: F32, cost_weight: float, allowed: Sequence[int] | None = None) -> npt.NDArray[np.int_]:
    """Row-wise argmax of quality - cost_weight * cost over the allowed tiers."""
    out: npt.NDArray[np.int_] = np.argmax(_utility(quality, cost, cost_weight, allowed), axis=1)
    return out


def choose_two_stage(
    first: tuple[F32, F32], second: tuple[F32, F32], cost_weight: float, margin: float
) -> npt.NDArray[np.int_]:
    """Row-wise, what a two-stage router serves (:meth:`Router.decide`): the first stage's choice
    where its margin clears ``margin``, the second stage's elsewhere; each ``(quality, cost)``."""
    confident = margins(*first, cost_weight) >= margin
    out: npt.NDArray[np.int_] = np.where(confident, choose(*first, cost_weight), choose(*second, cost_weight))
    return out


def two_stage_preference(first: tuple[F32, F32], second: tuple[F32, F32], margin: float) -> npt.NDArray[np.float64]:
    """Two tiers: the cost weight below which a two-stage router sends each row to the strong tier.

    A stage alone sends a row strong while ``w < gain / extra`` (its predicted quality gain over
    its extra cost). The first stage decides while ``|gain1 - w * extra1| >= margin``, i.e. for
    ``w <= p1 - margin / extra1`` (strong) and ``w >= p1 + margin / extra1`` (weak); in between the
    second stage's ``w < p2`` decides. So the strong weights are one interval from 0, ending at
    ``max(p1 - margin / extra1, min(p2, p1 + margin / extra1))``: a ranking like a single stage's."""

    def pref(quality: F32, cost: F32) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        gain = quality[:, -1].astype(np.float64) - quality[:, 0]
        extra = np.maximum(cost[:, -1].astype(np.float64) - cost[:, 0], 1e-9)
        return gain / extra, extra

    p1, extra1 = pref(*first)
    p2, _ = pref(*second)
    band = margin / extra1
    out: npt.NDArray[np.float64] = np.maximum(p1 - band, np.minimum(p2, p1 + band))
    return out


def margins(quality: F32, cost: F32, cost_weight: float, allowed: Sequence[int] | None = None) -> F32:
    """Row-wise utility of the best allowed tier minus the runner-up's (how clear the choice is)."""
    top2 = np.sort(_utility(quality, cost, cost_weight, allowed), axis=1)[:, -2:]
    out: F32 = (top2[:, 1] - top2[:, 0]).astype(np.float32)  # inf where one tier is allowed
    return out


class Router:
    def __init__(
        self,
        artifact: Artifact,
        encoder: Encoder,
        cache_size: int = 4096,
        *,
        first_stage: Router | None = None,
        margin: float = 0.0,
    ) -> None:
        if encoder.name != artifact.encoder:
            raise ValueError(f"artifact was trained with encoder {artifact.encoder!r}, got {encoder.name!r}")
        if first_stage is not None and first_stage.tiers != artifact.tiers:
            raise ValueError(f"first stage tiers {first_stage.tiers} differ from {artifact.tiers}")
        self.artifact = artifact
        self.encoder = encoder
        self.first_stage = first_stage
        self.margin = margin
        self._cache: OrderedDict[tuple[str, int | None], F32] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.default_cost_weight = float(artifact.meta.get("cost_weight", 0.35))
        # The weight and prices of the latest decision: a policy keeps them, so the next prompt's
        # first-stage check in ``decides_inline`` uses them too (a stale guess only costs speed).
        self._last_terms: tuple[float | None, Sequence[float] | None] = (None, None)
        expected = artifact.meta.get("encoder_provenance", {}).get("model_sha256")
        actual = getattr(encoder, "provenance", {}).get("model_sha256")
        if expected and actual and expected != actual:
            log.warning("encoder %s: model file %s differs from the artifact's %s", encoder.name, actual, expected)

    @classmethod
    def load(cls, path: Path, *, encoder: Encoder | None = None, cache_size: int = 4096) -> Router:
        """An artifact directory; one with a ``first_stage`` entry loads its first stage from the
        subdirectory it names (checksummed like any artifact) and decides in two stages."""
        artifact = load_artifact(path)
        first = None
        spec = artifact.meta.get("first_stage")
        if spec:
            first = cls.load(path / str(spec["artifact"]), cache_size=cache_size)
            if first.artifact.meta.get("model_sha256") != spec.get("model_sha256"):
                raise ArtifactError(f"{path}: first stage {spec['artifact']!r} is not the one it was built with")
        return cls(
            artifact,
            encoder or build_encoder(artifact.encoder),
            cache_size=cache_size,
            first_stage=first,
            margin=float(spec["margin"]) if spec else 0.0,
        )

    @property
    def tiers(self) -> list[str]:
        return self.artifact.tiers

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def encoder_name(self) -> str:
        return self.encoder.name

    def features(
        self,
        texts: Sequence[str],
        *,
        lengths: Sequence[int | None] | None = None,
        progress: bool = False,
        batch_size: int = 64,
    ) -> F32:
        """Embedding of each text's tail plus its length. ``lengths`` gives the length of the
        whole prompt when the caller passes only its tail (the gateway does, to bound the cache)."""
        tails = [prompt_for_routing(t, self.artifact.max_chars) for t in texts]
        emb = self.encoder.encode(tails, batch_size=batch_size, progress=progress)
        given = lengths if lengths is not None else [None] * len(texts)
        full = [n if n is not None else len(prompt_for_routing(t, 10**9)) for t, n in zip(texts, given, strict=True)]
        out: F32 = np.hstack([emb, text_features(full, self.artifact.length_scale)]).astype(np.float32)
        return out

    def score(self, texts: Sequence[str], *, progress: bool = False) -> tuple[F32, F32]:
        """(quality, cost) arrays of shape (len(texts), tiers)."""
        f = self.features(texts, progress=progress)
        return self.artifact.models.quality(f), self.artifact.models.cost(f)

    def score_features(self, features: F32) -> tuple[F32, F32]:
        return self.artifact.models.quality(features), self.artifact.models.cost(features)

    def _cached_features(self, text: str, length: int | None) -> F32:
        key = (text, length)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        feats = self.features([text], lengths=[length])
        if self._cache_size:
            with self._lock:
                self._cache[key] = feats
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return feats

    def decides_inline(self, text: str, length: int | None = None) -> bool:
        """Cheap enough to run on the caller's event loop: cached, an encoder marked ``inline``,
        or a first stage (itself inline) sure enough of its choice to decide alone."""
        if self.encoder.inline or (text, length) in self._cache:
            return True
        first = self.first_stage
        if first is None or not first.decides_inline(text, length):
            return False
        weight, scale = self._last_terms
        return first.decide(text, length=length, cost_weight=weight, cost_scale=scale).margin >= self.margin

    def cost_scale(self, relative_call_cost: Mapping[str, float | None]) -> list[float]:
        """Per-tier factors that re-price the cost model from its training prices to a policy's.

        ``relative_call_cost`` is each tier's call cost as a fraction of the top tier's under the
        policy's prices. A tier unpriced on either side keeps its training price (factor 1).
        """
        trained = self.artifact.meta.get("relative_call_cost") or {}
        out = []
        for tier in self.tiers:
            new, old = relative_call_cost.get(tier), trained.get(tier)
            out.append(float(new) / float(old) if new is not None and old else 1.0)
        return out

    def decide(
        self,
        text: str,
        *,
        length: int | None = None,
        cost_weight: float | None = None,
        allowed: Sequence[str] | None = None,
        cost_scale: Sequence[float] | None = None,
    ) -> Decision:
        """``text`` may be the tail of a longer prompt whose full ``length`` is given;
        ``cost_scale`` (from :meth:`cost_scale`) prices the tiers as the policy does."""
        if self.first_stage is not None:
            self._last_terms = (cost_weight, cost_scale)
            first = self.first_stage.decide(
                text, length=length, cost_weight=cost_weight, allowed=allowed, cost_scale=cost_scale
            )
            if first.margin >= self.margin:
                return replace(first, version=self.version)
        quality, cost = self.score_features(self._cached_features(text, length))
        if cost_scale is not None:
            cost = cost * np.asarray(cost_scale, dtype=np.float32)
        idx = [self.tiers.index(t) for t in allowed] if allowed is not None else None
        weight = self.default_cost_weight if cost_weight is None else cost_weight
        pick = int(choose(quality, cost, weight, idx)[0])
        return Decision(
            tier=self.tiers[pick],
            scores={t: float(quality[0, i]) for i, t in enumerate(self.tiers)},
            costs={t: float(cost[0, i]) for i, t in enumerate(self.tiers)},
            version=self.version,
            margin=float(margins(quality, cost, weight, idx)[0]),
            stage=1 if self.first_stage is None else 2,
        )

    def warm(self, texts: Sequence[str] = ("warm up",)) -> None:
        """Run the encoder(s) once so the first request does not pay for lazy initialisation."""
        if self.first_stage is not None:
            self.first_stage.warm(texts)
        self.features(list(texts))
