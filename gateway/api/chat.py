"""POST /v1/chat/completions: parse, run the pipeline, encode JSON or SSE."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import read_json_body
from gateway.api.deps import client_host
from gateway.api.sse import SSEResponse
from gateway.chat_request import parse_chat_request
from gateway.keys.guard import bearer_token
from gateway.pipeline import Pipeline, StreamAnswer
from gateway.routing.sessions import SESSION_HEADER

__all__ = ["chat_completions"]

log = logging.getLogger("tierwise.chat")


async def chat_completions(request: Request) -> Response:
    pipeline: Pipeline = request.app.state.tierwise.pipeline
    token = bearer_token(request.headers.get("authorization"))
    async with pipeline.call("chat", token, client_host(request), request.headers.get(SESSION_HEADER)) as call:
        body = await read_json_body(request, call.limits.max_body_bytes)
        chat = parse_chat_request(body, call.limits.unknown_fields)
        if chat.dropped:
            log.info("dropped unknown request fields %s (limits.unknown_fields: drop)", list(chat.dropped))
        answer = await pipeline.run(call, chat)
    if isinstance(answer, StreamAnswer):
        return SSEResponse(answer.relay, headers=answer.headers)
    return Response(answer.body, media_type="application/json", headers=answer.headers)
