"""`make setup` says it is still working while pip is silent (llama.cpp's wheel compiles for minutes)."""

from __future__ import annotations

import subprocess
import sys

from scripts.heartbeat import Heartbeat
from tests.conftest import REPO


def test_a_heartbeat_comes_after_each_quiet_interval_with_the_elapsed_time_and_the_last_line() -> None:
    beat = Heartbeat(started=100.0, every_s=30, hint="llama.cpp compiles once")
    beat.heard("Building wheel for llama-cpp-python (pyproject.toml): started\n", now=101.0)
    assert beat.due(130.0) is None  # 29 s of silence
    assert beat.due(131.0) == (
        "  ... still working, 0m31s elapsed (last: Building wheel for llama-cpp-python (pyproject.toml): started); "
        "llama.cpp compiles once"
    )
    assert beat.due(160.0) is None  # the next one 30 s after the last
    assert beat.due(161.0) is not None
    beat.heard("Successfully built llama-cpp-python", now=170.0)
    assert beat.due(199.0) is None


def test_the_command_output_passes_through_with_heartbeats_and_its_exit_code() -> None:
    child = "import time; print('one', flush=True); time.sleep(0.5); print('two'); raise SystemExit(3)"
    run = subprocess.run(
        [sys.executable, "scripts/heartbeat.py", "--every", "0.2", "--", sys.executable, "-c", child],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = run.stdout.splitlines()
    assert run.returncode == 3
    assert lines[0] == "one" and lines[-1] == "two"
    assert lines[1].startswith("  ... still working, 0m00s elapsed (last: one)")
