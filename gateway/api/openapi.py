"""The OpenAPI document: FastAPI's for its routes, plus the endpoints served outside its router
(the four client APIs, on the hot path), each described with its SDK's own types, and every
error as the gateway answers it (its API's envelope; never FastAPI's 422)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat import completion_create_params as chat_params
from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from gateway.api.deps import require_caller
from gateway.routing.sessions import SESSION_HEADER, SESSION_PATTERN

__all__ = ["ERROR_CODES", "add_operation", "install_openapi"]

_REF = "#/components/schemas/{model}"
ERROR_CODES = (400, 401, 403, 404, 413, 415, 429, 502, 503, 504)


def _schema(tp: Any, components: dict[str, Any]) -> dict[str, Any]:
    adapter = TypeAdapter(tp)
    schema: dict[str, Any] = adapter.json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    return schema


_ENVELOPES: dict[str, dict[str, Any]] = {
    # OpenAI's, for every API but Messages
    "ErrorEnvelope": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    # Anthropic's, for /v1/messages
    "AnthropicErrorEnvelope": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _error_responses(spec: dict[str, Any], envelope: str = "ErrorEnvelope") -> dict[str, Any]:
    spec.setdefault("components", {}).setdefault("schemas", {}).update(_ENVELOPES)
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{envelope}"}}}
    return {str(status): {"description": "an error", "content": error} for status in ERROR_CODES}


def add_operation(
    spec: dict[str, Any],
    path: str,
    *,
    summary: str,
    request: Any,
    response: type[BaseModel],
    stream_event: Any = None,
    extra_properties: dict[str, Any] | None = None,
    envelope: str = "ErrorEnvelope",
) -> None:
    """Add ``POST path`` with the request and response schemas of an SDK's types."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    body = _schema(request, components)
    body.setdefault("properties", {}).update(extra_properties or {})
    ok: dict[str, Any] = {"application/json": {"schema": _schema(response, components)}}
    if stream_event is not None:
        name = getattr(stream_event, "__name__", None) or str(stream_event)
        ok["text/event-stream"] = {
            "schema": {"type": "string", "description": f"server-sent events, each `data:` a {name}"}
        }
    responses: dict[str, Any] = {"200": {"description": "the answer", "content": ok}}
    responses.update(_error_responses(spec, envelope))
    spec.setdefault("paths", {}).setdefault(path, {})["post"] = {
        "summary": summary,
        "parameters": [
            {
                "name": SESSION_HEADER,
                "in": "header",
                "required": False,
                "description": "the conversation this turn belongs to: it keeps its first turn's tier (auto routes)",
                "schema": {"type": "string", "pattern": SESSION_PATTERN},
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": responses,
        "security": [{"bearer": []}],
    }


def _client_apis(spec: dict[str, Any]) -> None:
    """The four APIs clients call, from their SDKs' types (the Anthropic SDK's take seconds to
    import: only when the document is first asked for)."""
    from anthropic.types import Message, RawMessageStreamEvent, message_create_params  # noqa: PLC0415
    from openai.types import CreateEmbeddingResponse, embedding_create_params  # noqa: PLC0415
    from openai.types.responses import Response, ResponseStreamEvent, response_create_params  # noqa: PLC0415

    stream = {"stream": {"type": "boolean"}}
    add_operation(
        spec,
        "/v1/chat/completions",
        summary="Chat completions (routed to the cheapest adequate tier)",
        request=chat_params.CompletionCreateParamsBase,
        response=ChatCompletion,
        stream_event=ChatCompletionChunk,
        extra_properties=stream,
    )
    add_operation(
        spec,
        "/v1/responses",
        summary="Responses (OpenAI's Responses API, routed like chat)",
        request=response_create_params.ResponseCreateParamsBase,
        response=Response,
        stream_event="ResponseStreamEvent",
        extra_properties=stream,
    )
    _schema(ResponseStreamEvent, spec["components"]["schemas"])
    add_operation(
        spec,
        "/v1/messages",
        summary="Messages (Anthropic's Messages API, routed like chat; key in x-api-key or a bearer token)",
        request=message_create_params.MessageCreateParamsBase,
        response=Message,
        stream_event="RawMessageStreamEvent",
        extra_properties=stream,
        envelope="AnthropicErrorEnvelope",
    )
    _schema(RawMessageStreamEvent, spec["components"]["schemas"])
    add_operation(
        spec,
        "/v1/embeddings",
        summary="Embeddings (pinned to a deployment; not routed)",
        request=embedding_create_params.EmbeddingCreateParams,
        response=CreateEmbeddingResponse,
    )
    spec["paths"]["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics (the master key, once keys exist)",
            "responses": {
                "200": {
                    "description": "the exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_error_responses(spec),
            },
            "security": [{"bearer": []}],
        }
    }


def _as_answered(spec: dict[str, Any]) -> None:
    """FastAPI documents a 422 for a body it cannot validate; the gateway answers those 400 in its
    envelope (and 401 without a key)."""
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.update({k: v for k, v in _error_responses(spec).items() if k not in responses})
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install_openapi(app: FastAPI) -> None:
    """``GET /openapi.json`` and ``GET /docs``, behind the same key as the API itself."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _as_answered(spec)
            _client_apis(spec)
            spec.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_caller)])
    async def openapi_json() -> JSONResponse:
        return JSONResponse(build())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_caller)])
    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")
