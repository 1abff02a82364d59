"""The line ``tierwise serve`` prints once it accepts connections: where to point a client.

uvicorn's own "running on" line is a log record: it goes missing at ``--log-level warning``, or
whenever something else reconfigures uvicorn's loggers. This one is printed, always, once.
"""

from __future__ import annotations

import socket

import uvicorn

from gateway.settings import Settings

__all__ = ["AnnouncingServer", "serving_line"]


def serving_line(settings: Settings, port: int) -> str:
    url = f"http://{settings.host}:{port}"
    workers = f", {settings.workers} workers" if settings.workers > 1 else ""
    return f"tierwise: serving {url} (OpenAI base_url {url}/v1; policy {settings.policy_path}{workers}; Ctrl-C stops)"


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, printing ``serving_line`` when start-up (the app's included) is done."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            print(serving_line(self.settings, port), flush=True)
