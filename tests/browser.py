"""Headless Chromium driven over the DevTools protocol: load a page, wait for it, screenshot it."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

__all__ = ["chromium_path", "render"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(
    url: str,
    shots: Sequence[tuple[Path, str | None]],
    ready_js: str,
    probes: Mapping[str, str] | None = None,
    timeout_s: float = 60,
    width: int = 1500,
    height: int = 2600,
) -> dict[str, Any]:
    """Open ``url``, wait until ``ready_js`` is truthy, settle, then take each screenshot in turn
    (after running its JavaScript, e.g. a scroll, when given); return the DOM probes: the standard
    ones (exceptions, metrics, charts), read before the shots, and ``probes`` (name -> JavaScript,
    perhaps a promise), read after them."""
    exe = chromium_path()
    assert exe, "chromium is not installed"
    port = _free_port()
    # Chromium's helper processes can still be writing the throwaway profile as it is removed.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [
                exe,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: teardown stops the helpers too
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
                    if pages:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium did not open its debugging port")
                time.sleep(0.2)
            ids = itertools.count(1)
            with connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as ws:

                def call(method: str, **params: Any) -> dict[str, Any]:
                    mid = next(ids)
                    ws.send(json.dumps({"id": mid, "method": method, "params": params}))
                    while True:
                        msg = json.loads(ws.recv())
                        if msg.get("id") == mid:
                            return dict(msg.get("result", {}))

                def js(expr: str) -> Any:
                    result = call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
                    return result.get("result", {}).get("value")

                call(
                    "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
                )
                call("Page.navigate", url=url)
                deadline = time.monotonic() + timeout_s
                while not js(ready_js):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                time.sleep(3)  # let charts finish drawing
                found = {
                    "ready": bool(js(ready_js)),
                    "exceptions": js("document.querySelectorAll('[data-testid=\"stException\"]').length"),
                    "metrics": js(
                        "Array.from(document.querySelectorAll('[data-testid=\"stMetric\"]')).map(e => e.innerText)"
                    ),
                    "charts": js("document.querySelectorAll('[data-testid=\"stVegaLiteChart\"], .vega-embed').length"),
                }
                for path, before in shots:
                    if before:
                        js(before)
                        time.sleep(1.5)  # let the scroll land and charts in view draw
                    shot = call("Page.captureScreenshot", format="png")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(base64.b64decode(shot["data"]))
                found.update({name: js(expr) for name, expr in (probes or {}).items()})  # may click
                return found
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
