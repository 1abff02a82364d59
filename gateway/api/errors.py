"""Every error a client gets, in its API's envelope, rendered here: a GatewayError's own,
FastAPI's and Starlette's (validation, 404, 405), and a generic 500 for anything unexpected (its
trace goes to the log). Anthropic's envelope under ``/v1/messages``, OpenAI's everywhere else."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from gateway.errors import GatewayError, envelope
from gateway.translate.anthropic import error_body

__all__ = ["error_response", "gateway_error", "install_error_handlers", "unexpected"]

log = logging.getLogger("tierwise")

_ANTHROPIC = "/v1/messages"


def error_response(
    path: str,
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    anthropic = path == _ANTHROPIC or path.startswith(_ANTHROPIC + "/")
    body: dict[str, Any] = error_body(status, message) if anthropic else envelope(message, type_, param, code)
    return JSONResponse(body, status_code=status, headers=headers)


async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
    return error_response(
        request.url.path, exc.status_code, exc.message, exc.error_type, exc.param, exc.code, exc.headers
    )


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)  # the trace goes to our log, never to the client
    return error_response(request.url.path, 500, "internal error in the gateway", "server_error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, gateway_error)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in err["loc"])
        return error_response(request.url.path, 400, f"{loc}: {err['msg']}", "invalid_request_error", loc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        path, message = request.url.path, str(exc.detail)
        if exc.status_code == 404 and ("/v1" + path) in _paths(request.app):
            # the commonest setup mistake: an OpenAI client's base URL without /v1
            message = f"no {path} here: the API is under /v1 (a client's base URL ends in /v1)"
        return error_response(path, exc.status_code, message, "invalid_request_error", None, code, exc.headers)

    app.add_exception_handler(Exception, unexpected)


def _paths(app: FastAPI) -> set[str]:
    return {path for route in app.routes if isinstance(path := getattr(route, "path", None), str)}
