"""POST /v1/embeddings: a pinned embeddings deployment, keys, budgets and ledger as for chat."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import read_json_body
from gateway.api.deps import client_host
from gateway.keys.guard import bearer_token
from gateway.state import GatewayState

__all__ = ["create_embeddings"]


async def create_embeddings(request: Request) -> Response:
    state: GatewayState = request.app.state.tierwise
    flow = state.embeddings
    token = bearer_token(request.headers.get("authorization"))
    async with flow.pipeline.call("embeddings", token, client_host(request)) as call:
        body = await read_json_body(request, call.limits.max_body_bytes)
        answer = await flow.run(call, body)
    return Response(answer.body, media_type="application/json", headers=answer.headers)
