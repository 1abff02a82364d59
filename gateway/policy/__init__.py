"""Policies: the YAML schema, its loader and the live store that reloads it."""

from gateway.policy.loader import LoadedPolicy, PolicyError, load_policy
from gateway.policy.models import Deployment, Policy, Price, Route, RouterConfig, Tier
from gateway.policy.store import PolicyStore

__all__ = [
    "Deployment",
    "LoadedPolicy",
    "Policy",
    "PolicyError",
    "PolicyStore",
    "Price",
    "Route",
    "RouterConfig",
    "Tier",
    "load_policy",
]
