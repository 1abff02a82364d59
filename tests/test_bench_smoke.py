"""A short smoke of the benchmark harness, so it keeps working (no figures are asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_bench_harness_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--skip-litellm", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "gateway.json").read_text())
    assert {"direct", "tierwise-pinned", "tierwise-auto"} <= set(result["contenders"])
    for name in ("tierwise-pinned", "tierwise-auto"):
        assert result["contenders"][name]["errors"] == 0
    assert (tmp_path / "gateway.png").stat().st_size > 5000
