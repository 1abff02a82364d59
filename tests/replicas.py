"""Gateway replicas as separate processes (`tierwise serve`), sharing a database and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from tests.conftest import REPO, free_port

__all__ = ["Replicas"]


class Replicas:
    def __init__(
        self,
        tmp: Path,
        policy: str,
        db_url: str,
        redis_url: str | None,
        master: str,
        n: int = 2,
        router: bool = False,
    ) -> None:
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(textwrap.dedent(policy))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        for i in range(n):
            port = free_port()
            env = {
                **os.environ,
                "TIERWISE_DATABASE_URL": db_url,
                "TIERWISE_MASTER_KEY": master,
                "TIERWISE_SPOOL_DIR": str(tmp / f"spool-{i}"),
                "TIERWISE_LEDGER_FLUSH_INTERVAL_S": "0.05",
            }
            if redis_url:
                env["TIERWISE_REDIS_URL"] = redis_url
            log = (tmp / f"replica-{i}.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gateway.cli",
                        "serve",
                        "--policy",
                        str(self.policy),
                        "--port",
                        str(port),
                        *([] if router else ["--no-router"]),
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        for url in self.urls:
            _wait(url + "/healthz")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=20)


def _wait(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} never became healthy")
