"""A loopback server that answers 200 to anything and remembers every request: it stands in for
an attacker's endpoint, so a test can assert that nothing (no prompt, no provider key) reached it."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.demo.server_thread import ServerThread


class CaptureServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

        async def anything(request: Request) -> JSONResponse:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "headers": dict(request.headers),
                    "body": (await request.body()).decode(errors="replace"),
                }
            )
            return JSONResponse({"ok": True})

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        app = Starlette(routes=[Route("/{path:path}", anything, methods=methods)])
        self._server = ServerThread(app)

    def __enter__(self) -> CaptureServer:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url
