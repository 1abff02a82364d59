"""/admin/keys: create, list, update, revoke virtual keys (master key from the environment)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from gateway.api.deps import get_state
from gateway.errors import AuthenticationError, ModelNotFoundError, PermissionDeniedError
from gateway.keys.guard import bearer_token
from gateway.state import GatewayState

__all__ = ["router"]

router = APIRouter(prefix="/admin")


_LABEL = r"^[^\x00-\x1f\x7f]*$"  # printable: no NULs or control characters in names stored and shown


class KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    owner: str = Field(default="", max_length=200, pattern=_LABEL)
    team: str = Field(default="", max_length=200, pattern=_LABEL)
    allowed_routes: list[str] | None = Field(default=None, max_length=100)
    allowed_tiers: list[str] | None = Field(default=None, max_length=100)
    # Bounded so counters (integer micro-dollars, tokens) stay within 64 bits.
    budget_daily_usd: float | None = Field(default=None, ge=0, le=1e9)
    budget_monthly_usd: float | None = Field(default=None, ge=0, le=1e9)
    rpm_limit: int | None = Field(default=None, ge=1, le=10**9)
    tpm_limit: int | None = Field(default=None, ge=1, le=10**12)
    expires_at: datetime | None = None
    metadata: dict[str, Any] | None = None


async def _master(request: Request, state: GatewayState = Depends(get_state)) -> GatewayState:
    guard = state.guard
    if not guard.master_key:
        raise PermissionDeniedError("the admin API is disabled: set TIERWISE_MASTER_KEY to enable it")
    if not guard.is_master(bearer_token(request.headers.get("authorization"))):
        raise AuthenticationError("the admin API needs the master key")
    return state


@router.post("/keys")
async def create_key(fields: KeyFields, state: GatewayState = Depends(_master)) -> JSONResponse:
    fields_set = fields.model_dump(exclude_unset=True)
    key, info = await state.guard.store_call(lambda: state.guard.store.create(**fields_set))
    # The only time the key itself is ever returned.
    return JSONResponse({"key": key, **info}, status_code=201)


@router.get("/keys")
async def list_keys(state: GatewayState = Depends(_master)) -> dict[str, Any]:
    return {"data": await state.guard.store_call(state.guard.store.list)}


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, fields: KeyFields, state: GatewayState = Depends(_master)) -> dict[str, Any]:
    fields_set = fields.model_dump(exclude_unset=True)
    info = await state.guard.store_call(lambda: state.guard.store.update(key_id, **fields_set))
    if info is None:
        raise ModelNotFoundError(f"no key {key_id}", code="key_not_found")
    return info


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, state: GatewayState = Depends(_master)) -> dict[str, Any]:
    if not await state.guard.store_call(lambda: state.guard.store.revoke(key_id)):
        raise ModelNotFoundError(f"no key {key_id}", code="key_not_found")
    return {"id": key_id, "revoked": True}


@router.get("/keys/{key_id}/spend")
async def key_spend(key_id: str, state: GatewayState = Depends(_master)) -> dict[str, Any]:
    if not await state.guard.store_call(lambda: state.guard.store.exists(key_id)):
        raise ModelNotFoundError(f"no key {key_id}", code="key_not_found")
    day, month = await state.guard.limiter.spent(key_id, state.guard.clock.now())
    return {"id": key_id, "spent_today_usd": day, "spent_month_usd": month}
