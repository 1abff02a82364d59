"""FastAPI dependencies of the non-hot endpoints."""

from __future__ import annotations

from starlette.requests import Request

from gateway.state import GatewayState

__all__ = ["get_state"]


async def get_state(request: Request) -> GatewayState:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, a thread
    # hop on every request for a dictionary lookup.
    state: GatewayState = request.app.state.tierwise
    return state
