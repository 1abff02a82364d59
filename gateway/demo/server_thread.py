"""Serve an ASGI app on loopback in a background thread: the fake provider in demos and tests."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Literal

import uvicorn

__all__ = ["ServerThread"]


class _QuietThread(logging.Filter):
    """Drops a thread's records below WARNING (its start-up lines would read like the gateway's)."""

    def __init__(self, thread_name: str) -> None:
        super().__init__()
        self.thread_name = thread_name

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.threadName != self.thread_name


class ServerThread:
    """uvicorn on ``127.0.0.1`` in a daemon thread with its own event loop.

    Port 0 picks a free port; ``start()`` returns the base URL once the server accepts.
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, lifespan: Literal["auto", "on", "off"] = "off"
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        # log_config=None: a server started inside the gateway must not reconfigure (and silence)
        # the logging of the uvicorn that serves the gateway itself; its own chatter is dropped.
        config = uvicorn.Config(app, log_config=None, lifespan=lifespan, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"server-{self.port}", daemon=True)
        logging.getLogger("uvicorn.error").addFilter(_QuietThread(self._thread.name))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self, timeout_s: float = 10.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()
