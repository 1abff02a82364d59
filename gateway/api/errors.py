"""OpenAI's error envelope for every route: a GatewayError's own, FastAPI's and Starlette's
errors in the same shape, and a generic 500 for anything unexpected (its trace goes to the log)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from gateway.errors import GatewayError, envelope

__all__ = ["gateway_error", "install_error_handlers", "unexpected"]

log = logging.getLogger("tierwise")


async def gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.to_envelope(), status_code=exc.status_code, headers=exc.headers)


async def unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)  # the trace goes to our log, never to the client
    return JSONResponse(
        envelope("internal error in the gateway", "server_error", None, "internal_error"), status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, gateway_error)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in err["loc"])
        return JSONResponse(envelope(f"{loc}: {err['msg']}", "invalid_request_error", loc, None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(
            envelope(str(exc.detail), "invalid_request_error", None, code),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(Exception, unexpected)
