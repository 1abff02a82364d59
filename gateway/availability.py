"""Which deployments and tiers can serve now: credentials present, loopback servers answering."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.dispatch import Dispatcher
from gateway.policy.models import Policy

__all__ = ["Availability"]


@dataclass
class Availability:
    dispatcher: Dispatcher
    # Deployments found unreachable by the health probe (local servers that are down).
    down: set[str] = field(default_factory=set)
    # Probes in a row that timed out, per local deployment (see gateway.local.health).
    probe_timeouts: dict[str, int] = field(default_factory=dict)

    def deployment_available(self, name: str, policy: Policy) -> bool:
        return name not in self.down and self.has_key(name, policy)

    def has_key(self, name: str, policy: Policy) -> bool:
        """The deployment's credentials are in the environment (or it needs none)."""
        found = policy.deployment(name)
        return found is not None and self.dispatcher.has_credentials(found[1])

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
