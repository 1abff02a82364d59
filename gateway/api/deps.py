"""FastAPI dependencies of the non-hot endpoints, and the caller's address every endpoint reads."""

from __future__ import annotations

from fastapi import Depends
from starlette.requests import Request

from gateway.keys.guard import bearer_token
from gateway.state import GatewayState

__all__ = ["client_host", "get_state", "require_caller"]


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


async def get_state(request: Request) -> GatewayState:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, a thread
    # hop on every request for a dictionary lookup.
    state: GatewayState = request.app.state.tierwise
    return state


async def require_caller(request: Request, state: GatewayState = Depends(get_state)) -> GatewayState:
    """Someone the gateway serves: the master key or a valid virtual key once keys exist (model
    names, environment variable names and file paths are nobody else's business); in open mode,
    a loopback client."""
    token = bearer_token(request.headers.get("authorization"))
    identity = None if state.guard.is_master(token) else await state.guard.authenticate(token, client_host(request))
    request.state.identity = identity  # None: the master key, or open mode
    return state
