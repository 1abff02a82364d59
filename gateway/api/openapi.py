"""The OpenAPI document: FastAPI's for its routes, plus the endpoints served outside its router
(chat completions, on the hot path), described with the ``openai`` SDK's own types."""

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


def add_operation(
    spec: dict[str, Any],
    path: str,
    *,
    summary: str,
    request: Any,
    response: type[BaseModel],
    stream_event: type[BaseModel] | None = None,
    extra_properties: dict[str, Any] | None = None,
) -> None:
    """Add ``POST path`` with the request and response schemas of an SDK's types."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    body = _schema(request, components)
    body.setdefault("properties", {}).update(extra_properties or {})
    ok: dict[str, Any] = {"application/json": {"schema": _schema(response, components)}}
    if stream_event is not None:
        ok["text/event-stream"] = {
            "schema": {"type": "string", "description": f"server-sent events, each `data:` a {stream_event.__name__}"}
        }
        _schema(stream_event, components)
    error = {"$ref": "#/components/schemas/ErrorEnvelope"}
    components["ErrorEnvelope"] = {
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
    }
    responses: dict[str, Any] = {"200": {"description": "the answer", "content": ok}}
    for status in ERROR_CODES:
        responses[str(status)] = {"description": "an error", "content": {"application/json": {"schema": error}}}
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


def install_openapi(app: FastAPI, chat_path: str) -> None:
    """``GET /openapi.json`` and ``GET /docs``, behind the same key as the API itself."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            add_operation(
                spec,
                chat_path,
                summary="Chat completions (routed to the cheapest adequate tier)",
                request=chat_params.CompletionCreateParamsBase,
                response=ChatCompletion,
                stream_event=ChatCompletionChunk,
                extra_properties={"stream": {"type": "boolean"}},
            )
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
