"""POST /v1/responses: OpenAI's Responses API, served through the chat pipeline."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import read_json_body
from gateway.api.deps import client_host
from gateway.api.streams import translated_sse
from gateway.chat_request import parse_chat_request
from gateway.errors import InvalidRequestError
from gateway.keys.guard import bearer_token
from gateway.pipeline import Pipeline, StreamAnswer
from gateway.routing.sessions import SESSION_HEADER
from gateway.translate.responses import ResponseEvents, chat_to_response, responses_to_chat

__all__ = ["create_response"]

# Chat fields the translation renamed: an error about one names the field the client sent.
_CLIENT_NAMES = {"max_completion_tokens": "max_output_tokens", "response_format": "text.format"}


async def create_response(request: Request) -> Response:
    pipeline: Pipeline = request.app.state.tierwise.pipeline
    token = bearer_token(request.headers.get("authorization"))
    async with pipeline.call("responses", token, client_host(request), request.headers.get(SESSION_HEADER)) as call:
        body = await read_json_body(request, call.limits.max_body_bytes)
        chat_body = responses_to_chat(body)  # a FieldError names the Responses API's own fields
        try:
            chat = parse_chat_request(chat_body)
        except InvalidRequestError as exc:
            raise _renamed(exc) from None
        answer = await pipeline.run(call, chat)
        response_id = "resp_" + call.request_id.removeprefix("req_")
    created = int(pipeline.clock.now())
    if isinstance(answer, StreamAnswer):
        return translated_sse(answer, ResponseEvents(body, response_id, created))
    out: dict[str, Any] = chat_to_response(answer.payload, body, response_id, created)
    return Response(orjson.dumps(out), media_type="application/json", headers=answer.headers)


def _renamed(exc: InvalidRequestError) -> InvalidRequestError:
    head = (exc.param or "").split("[")[0].split(".")[0]
    if head not in _CLIENT_NAMES:
        return exc
    param = _CLIENT_NAMES[head] + (exc.param or "")[len(head) :]
    return InvalidRequestError(exc.message.replace(exc.param or "", param, 1), param=param, code=exc.code)
