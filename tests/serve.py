"""A real ``tierwise serve`` process on loopback, for tests that must see what a deployed gateway does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from tests.conftest import REPO, free_port


class ServeProcess:
    """``python -m gateway.cli serve`` with a policy written from YAML, its own SQLite ledger and log."""

    def __init__(self, tmp: Path, policy_yaml: str, env: dict[str, str] | None = None, *args: str) -> None:
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(textwrap.dedent(policy_yaml))
        self.db = tmp / "ledger.db"
        self.log = tmp / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "TIERWISE_DATABASE_URL": f"sqlite:///{self.db}",
            "TIERWISE_SPOOL_DIR": str(tmp / "spool"),
            "TIERWISE_LEDGER_FLUSH_INTERVAL_S": "0.05",
            **(env or {}),
        }
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--policy", str(self.policy), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--no-router", *args], cwd=REPO, env=full_env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tierwise serve exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"tierwise serve never became healthy:\n{self.log.read_text()[-3000:]}")

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
