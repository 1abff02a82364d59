"""Everything a handler needs, built once by the app factory and passed explicitly."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from gateway.dispatch import Dispatcher
from gateway.keys.guard import Guard
from gateway.ledger.writer import LedgerWriter
from gateway.policy.models import Policy
from gateway.policy.store import PolicyStore
from gateway.providers.server_thread import ServerThread
from gateway.resolve import Resolver, RouterLike
from gateway.settings import Settings

__all__ = ["GatewayState", "get_state"]

log = logging.getLogger("tierwise")


@dataclass
class GatewayState:
    settings: Settings
    policy: PolicyStore
    dispatcher: Dispatcher
    ledger: LedgerWriter
    router: RouterLike | None = None
    fake_server: ServerThread | None = None
    guard: Guard | None = None
    # Deployments found unreachable by the start-up probe (local servers that are down).
    down: set[str] = field(default_factory=set)
    # Probes in a row that timed out, per local deployment (see gateway.health).
    probe_timeouts: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    # Derived: the resolver asks this state which tiers are available.
    resolver: Resolver = field(init=False)

    def __post_init__(self) -> None:
        self.resolver = Resolver(self.router, self.tier_available, self.deployment_available)

    def deployment_available(self, name: str, policy: Policy) -> bool:
        found = policy.deployment(name)
        if found is None:
            return False
        return name not in self.down and self.dispatcher.has_credentials(found[1])

    def tier_available(self, policy: Policy, tier: str) -> bool:
        return any(self.deployment_available(d.name, policy) for d in policy.tier(tier).deployments)

    def unavailable_reason(self, name: str, policy: Policy) -> str | None:
        found = policy.deployment(name)
        if found is None:
            return "unknown"
        dep = found[1]
        if not self.dispatcher.has_credentials(dep):
            return f"environment variable {dep.api_key_env} is not set"
        if name in self.down:
            return f"server at {dep.api_base} is not answering"
        return None


async def get_state(request: Request) -> GatewayState:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, a thread
    # hop on every request for a dictionary lookup.
    state: GatewayState = request.app.state.tierwise
    return state
