"""`tierwise serve` tells the user where it serves, whatever the policy and the log level."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.serve import ServeProcess


@pytest.mark.parametrize("log_level", ["info", "warning"])
def test_serve_prints_its_url_once_with_the_fake_provider_policy(tmp_path: Path, log_level: str) -> None:
    # The fake provider starts a uvicorn of its own inside the gateway: it once silenced the
    # gateway's uvicorn lines, so `make serve-fake` never said where it served.
    gw = ServeProcess(tmp_path, (REPO / "policies" / "fake.yaml").read_text(), None, "--log-level", log_level)
    try:
        line = f"tierwise: serving {gw.url} (OpenAI base_url {gw.v1}; policy {gw.policy}; Ctrl-C stops)"
        deadline = time.monotonic() + 10
        while line not in gw.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = gw.log.read_text()
        assert log.count("tierwise: serving") == 1 and line in log, log
        if log_level == "info":
            assert f"Uvicorn running on {gw.url}" in log, log
    finally:
        gw.stop()
