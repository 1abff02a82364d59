"""Everything the endpoints need, built once by the app factory and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.availability import Availability
from gateway.dispatch import Dispatcher
from gateway.keys.guard import Guard
from gateway.ledger.writer import LedgerWriter
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.pipeline.embeddings import EmbeddingsFlow
from gateway.policy.store import PolicyStore
from gateway.providers.base import Provider
from gateway.quality.sampler import QualitySampler
from gateway.redact import RedactingFilter
from gateway.routing.resolve import RouterLike
from gateway.settings import Settings

__all__ = ["GatewayState"]


@dataclass
class GatewayState:
    settings: Settings
    policy: PolicyStore
    dispatcher: Dispatcher
    availability: Availability
    guard: Guard
    ledger: LedgerWriter
    pipeline: Pipeline
    providers: dict[str, Provider]
    sampler: QualitySampler
    redaction: RedactingFilter
    metrics: Metrics
    embeddings: EmbeddingsFlow
    router: RouterLike | None = None
