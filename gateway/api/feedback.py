"""POST /v1/feedback: a client's verdict on an answer, by the answer's ``x-tierwise-request-id``.

Only the key that made the request (or the master key) may judge it; sending it again replaces
the earlier verdict of the same source.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import JSONResponse

from gateway.api.deps import client_host, get_state
from gateway.errors import ModelNotFoundError, PermissionDeniedError
from gateway.keys.guard import bearer_token
from gateway.quality.feedback import find_request, record_feedback
from gateway.state import GatewayState

__all__ = ["router"]

router = APIRouter()


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=64)
    score: float | None = Field(default=None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _one_verdict(self) -> FeedbackBody:
        if (self.score is None) == (self.thumbs is None):
            raise ValueError("give exactly one of `score` (0..1) and `thumbs` (up/down)")
        return self

    @property
    def value(self) -> float:
        return self.score if self.score is not None else (1.0 if self.thumbs == "up" else 0.0)


@router.post("/v1/feedback")
async def feedback(body: FeedbackBody, request: Request, state: GatewayState = Depends(get_state)) -> JSONResponse:
    token = bearer_token(request.headers.get("authorization"))
    master = state.guard.is_master(token)
    identity = None if master else await state.guard.authenticate(token, client_host(request))
    engine = state.ledger.engine
    found = state.pipeline.accounts.recent(body.request_id) or await asyncio.to_thread(
        find_request, engine, body.request_id
    )
    if found is None:
        raise ModelNotFoundError(f"no request {body.request_id!r}", param="request_id", code="request_not_found")
    if not master and found["api_key_id"] != (identity.key_id if identity else None):
        raise PermissionDeniedError("only the key that made a request (or the master key) can judge it")
    source = "master" if master else (identity.key_id if identity else "anonymous")
    new = await asyncio.to_thread(record_feedback, engine, body.request_id, source, body.value, body.comment, found)
    payload = {"request_id": body.request_id, "source": source, "score": body.value, "comment": body.comment}
    # The id of the answer judged, as every answer about a request carries it
    return JSONResponse(payload, status_code=201 if new else 200, headers={"x-tierwise-request-id": body.request_id})
