"""GET /v1/models, /healthz and /readyz. Only ``/healthz`` answers anyone: the others name models,
environment variables and file paths, so they need a key once keys exist."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.deps import require_caller
from gateway.keys import Guard
from gateway.keys.store import Identity
from gateway.policy.models import Deployment, Tier
from gateway.state import GatewayState

__all__ = ["router"]

router = APIRouter()


def _entry(model_id: str, owned_by: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owned_by, **extra}


@router.get("/v1/models")
async def list_models(request: Request, state: GatewayState = Depends(require_caller)) -> JSONResponse:
    """The models the caller may ask for (a key's allowed routes and tiers)."""
    policy = state.policy.current.policy
    identity: Identity | None = request.state.identity
    fence = Guard.fence(identity, policy)

    def may(names: set[str], tier: str | None) -> bool:  # as the request itself is authorized
        if identity is None:
            return True
        named = identity.allowed_routes is None or bool(names & identity.allowed_routes)
        return named and (fence is None or tier is None or tier in fence)

    data: list[dict[str, Any]] = []
    for route in policy.routes:
        kind = "auto" if route.auto else f"tier/{route.tier}"
        if may({route.name}, route.tier):
            data.append(_entry(route.name, "tierwise", tierwise={"kind": "route", "routes_to": kind}))
    for tier in policy.tiers:
        fake = all(d.provider == "fake" for d in tier.deployments)
        deployments = [d for d in tier.deployments if may({d.name, f"tier/{tier.name}"}, tier.name)]
        if not may({f"tier/{tier.name}"}, tier.name):
            data.extend(_deployments(state, tier, deployments))
            continue
        data.append(
            _entry(
                f"tier/{tier.name}",
                "tierwise-fake" if fake else "tierwise",
                tierwise={
                    "kind": "tier",
                    "available": state.availability.tier_available(policy, tier.name),
                    "fake": fake,
                },
            )
        )
        data.extend(_deployments(state, tier, deployments))
    return JSONResponse({"object": "list", "data": data})


def _deployments(state: GatewayState, tier: Tier, deployments: list[Deployment]) -> list[dict[str, Any]]:
    policy = state.policy.current.policy
    out = []
    for dep in deployments:
        reason = state.availability.unavailable_reason(dep.name, policy)
        out.append(
            _entry(
                dep.name,
                "tierwise-fake" if dep.provider == "fake" else "tierwise",
                tierwise={
                    "kind": "deployment",
                    "tier": tier.name,
                    "model": dep.model,
                    "fake": dep.provider == "fake",
                    "available": reason is None,
                    "unavailable_reason": reason,
                },
            )
        )
    return out


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: GatewayState = Depends(require_caller)) -> JSONResponse:
    policy = state.policy.current.policy
    tiers = {t.name: state.availability.tier_available(policy, t.name) for t in policy.tiers}
    degraded: list[str] = []
    if ledger := state.ledger.status():
        degraded.append(ledger)
    guard = state.guard
    if guard.key_store_down:
        degraded.append(guard.key_store_down)
    if guard.degraded:
        degraded.append(guard.degraded)
    if state.policy.last_error:
        degraded.append("last policy reload was rejected: " + state.policy.last_error.splitlines()[0])
    for tier, ok in tiers.items():
        if not ok:
            degraded.append(f"tier {tier} has no available deployment")
    for name, why in state.dispatcher.cooldowns().items():
        degraded.append(f"deployment {name} is cooling down: {why}")
    router_info = {"loaded": state.router is not None, "version": getattr(state.router, "version", None)}
    # A replica that cannot check keys or hold limits should leave the load balancer's rotation.
    ready = any(tiers.values()) and guard.key_store_down is None and not guard.limits_down
    body = {"ready": ready, "tiers": tiers, "router": router_info, "degraded": degraded}
    return JSONResponse(body, status_code=200 if ready else 503)
