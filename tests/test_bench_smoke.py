"""A short smoke of the benchmark harness, so it keeps working (no figures are asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_bench_harness_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--skip-litellm", "--skip-portkey", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "gateway.json").read_text())
    contenders = result["contenders"]
    assert {"direct", "tierwise-pinned", "tierwise-auto"} <= set(contenders)
    errors = {  # what went wrong, to read in a failure
        name: (raw.get("error_kinds"), raw.get("stream", {}).get("error_kinds"))
        for run in result["runs"]
        for name, raw in run["raw"].items()
    }
    for name in ("tierwise-responses", "tierwise-pinned-judged", "tierwise-auto-judged"):
        assert contenders[name]["errors"] == 0, errors
        assert contenders[name]["added_p50_ms"] is not None
    raw = result["runs"][0]["raw"]
    assert raw["tierwise-pinned-judged"]["ledger_purposes"]["client"] > 0  # the judged gateway served
    assert contenders["tierwise-pinned"]["journal_append_us"] > 0
    for name in ("tierwise-pinned", "tierwise-auto"):
        assert contenders[name]["errors"] == 0, errors
        # every chunk of the mock's 200-chunk stream reached the client, one event each
        assert contenders[name]["content_events"] == result["plan"]["stream_chunks"] == 200
        assert contenders[name]["ttft_overhead_ms"] is not None
        assert contenders[name]["per_chunk_us"] is not None
    assert contenders["direct"]["ttlt_p50_ms"] is not None
    for name in ("tierwise-1w-redis", "tierwise-2w-redis"):  # present when Redis is reachable
        assert contenders.get(name, {"errors": 0})["errors"] == 0, errors
    assert "added_p50_vs_portkey" in result["headlines"]
    assert (tmp_path / "gateway.png").stat().st_size > 5000


def test_agent_cache_bench_smoke(tmp_path: Path) -> None:
    """The agent-traffic bench runs, and through Tierwise the ledger equals what the caching
    upstream billed (the script exits non-zero otherwise)."""
    out = subprocess.run(
        [sys.executable, "bench/agent_cache.py", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (found,) = json.loads((tmp_path / "agent_cache.json").read_text()).values()
    assert len(found) == 3
    for r in found.values():
        assert abs(r["ledger_minus_bill"]) <= 1e-9 and r["usd"] > 0 and r["cache_read_share"] > 0.5
        assert r["calls"] == 12
    assert (tmp_path / "agent_cache.png").read_bytes()[:4] == b"\x89PNG"


def test_long_streams_bench_smoke(tmp_path: Path) -> None:
    """The stream ramp runs direct and through Tierwise: every chunk of every stream arrives and
    has its delay read, and the gateway's memory, CPU and event-loop lag are read per step."""
    out = subprocess.run(
        [sys.executable, "bench/streams.py", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "streams.json").read_text())
    assert set(result["contenders"]) == {"direct", "tierwise"}
    for name, (step,) in result["contenders"].items():
        assert step["failed"] == 0, (name, step["outcomes"])
        assert step["chunks"] == step["streams"] * result["chunks"]
        assert step["chunk_p99_ms"] is not None and step["ttft_p99_ms"] is not None
    (tierwise,) = result["contenders"]["tierwise"]
    assert tierwise["added_p99_ms"] is not None and tierwise["gateway_cpu_us_per_chunk"] > 0
    assert tierwise["rss_peak_mb"] > 0 and tierwise["loop_lag_p99_ms"] is not None
    assert (tmp_path / "streams.png").read_bytes()[:4] == b"\x89PNG"
