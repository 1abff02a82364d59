"""POST /v1/messages: Anthropic's Messages API, served through the chat pipeline.

Errors use Anthropic's envelope (``{"type": "error", "error": {"type", "message"}}``), keys come
in ``x-api-key`` (as Anthropic's clients send them) or ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import read_json_body
from gateway.api.deps import client_host
from gateway.api.streams import translated_sse
from gateway.chat_request import parse_chat_request
from gateway.keys.guard import bearer_token
from gateway.pipeline import Pipeline, StreamAnswer
from gateway.routing.sessions import SESSION_HEADER
from gateway.translate.anthropic import (
    MessageEvents,
    chat_to_message,
    load,
    loaded,
    messages_to_chat,
)
from gateway.translate.anthropic.extras import carry

__all__ = ["create_message"]


async def create_message(request: Request) -> Response:
    pipeline: Pipeline = request.app.state.tierwise.pipeline
    token = request.headers.get("x-api-key") or bearer_token(request.headers.get("authorization"))
    async with pipeline.call("messages", token, client_host(request), request.headers.get(SESSION_HEADER)) as call:
        body = await read_json_body(request, call.limits.max_body_bytes)
        if not loaded():
            await asyncio.to_thread(load)  # imports litellm and the SDK's types: seconds, once
        chat_body, names, extras = messages_to_chat(body)
        chat = parse_chat_request(chat_body)
        call.notes.extend(f"cache_control not carried: {lost}" for lost in extras.lost)
        answer = await pipeline.run(call, replace(chat, body=carry(chat.body, extras)))
        message_id = "msg_" + call.request_id.removeprefix("req_")
    if isinstance(answer, StreamAnswer):
        return translated_sse(answer, MessageEvents(message_id, str(body["model"]), names))
    out = chat_to_message(answer.payload, message_id, names)
    return Response(orjson.dumps(out), media_type="application/json", headers=answer.headers)
