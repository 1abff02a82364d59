"""The compose file parses (no container engine runs here, so it cannot be started)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO


def test_compose_file_is_valid() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail(".ci/run installs docker-compose; it must be present under CI")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    env = {**os.environ, "TIERWISE_MASTER_KEY": "sk-compose-check"}
    out = subprocess.run(
        [exe, "-f", "docker/compose.yaml", "config", "-q"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    services = subprocess.run(
        [exe, "-f", "docker/compose.yaml", "config", "--services"], cwd=REPO, env=env, capture_output=True, text=True
    ).stdout.split()
    assert {"postgres", "redis", "gateway-1", "gateway-2", "proxy", "dashboard", "local-model"} <= set(services)
    # one image for every service built from the Dockerfile: built once, not once per service
    resolved = yaml.safe_load(
        subprocess.run(
            [exe, "-f", "docker/compose.yaml", "config"], cwd=REPO, env=env, capture_output=True, text=True
        ).stdout
    )["services"]
    built = {name: svc.get("image") for name, svc in resolved.items() if "build" in svc}
    assert set(built) == {"gateway-1", "gateway-2", "local-model", "dashboard"}
    assert set(built.values()) == {"tierwise:local"}
