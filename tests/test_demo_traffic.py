"""`tierwise demo-traffic`: a progress bar on a terminal, no log line per request, and a summary
whose figures are the ledger's."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from collections import Counter
from pathlib import Path

from gateway.demo.traffic import DemoSummary
from tests.conftest import REPO, GatewayFactory


def _run_on_a_terminal(command: list[str]) -> tuple[int, str, str]:
    """Run with stderr on a 100-column pseudo-terminal (where a progress bar draws): code, stdout, stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    screen: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=slave) as proc:
        os.close(slave)
        stdout, _ = proc.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, stdout.decode(), b"".join(screen).decode(errors="replace")


def test_demo_traffic_draws_a_progress_bar_and_prints_a_summary_that_matches_the_ledger(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = start_gateway((REPO / "policies" / "fake.yaml").read_text())
    demo = ["demo-traffic", "--base-url", gw.v1, "--requests", "40", "--concurrency", "4", "--shared", str(tmp_path)]
    code, stdout, terminal = _run_on_a_terminal([sys.executable, "-m", "gateway.cli", *demo])
    assert code == 0, terminal
    assert "40/40 [" in terminal and "req/s" in terminal  # tqdm's bar, finished
    assert "HTTP Request" not in terminal and "httpx" not in terminal  # httpx's INFO line per request
    rows = gw.rows("purpose = 'client'", wait_for=40)
    ledger = DemoSummary(
        requests=len(rows),
        by_tier=Counter(r["tier"] or "-" for r in rows),
        by_status=Counter(str(r["status_code"]) for r in rows),
        spend_usd=sum(r["cost_usd"] for r in rows),
        frontier_usd=sum(r["frontier_cost_usd"] for r in rows),
    )
    out = stdout.splitlines()
    assert out[0] == f"sending 40 requests (16 distinct prompts) to {gw.v1}"
    assert out[1].startswith("40 requests in ")
    assert out[2:] == ledger.lines()[1:]  # by tier, by status, spend and savings
    assert ledger.spend_usd and ledger.frontier_usd and ledger.spend_usd < ledger.frontier_usd


def test_a_summary_without_a_gateway_says_what_it_could_not_read() -> None:
    summary = DemoSummary(requests=3, by_tier=Counter({"-": 3}), by_status=Counter({"ConnectError": 3}), elapsed_s=0.5)
    summary.spend_note = "GET /metrics failed: ConnectError"
    assert summary.lines() == [
        "3 requests in 0.5s (6.0/s)",
        "  by tier:   - 3",
        "  by status: ConnectError 3",
        "  spend:     unknown (GET /metrics failed: ConnectError)",
        "  over time: sent at once, so the dashboard's charts over time show them in a bar or two "
        "(--over 600 spreads them over 10 minutes)",
    ]
    summary.over_s = 600
    assert not summary.lines()[-1].startswith("  over time")


def test_demo_traffic_in_a_log_says_how_far_it_got_every_tenth_of_the_run(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = start_gateway((REPO / "policies" / "fake.yaml").read_text())
    demo = ["demo-traffic", "--base-url", gw.v1, "--requests", "20", "--shared", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *demo], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    progress = [line.split(" in ")[0].strip() for line in run.stderr.splitlines()]
    assert progress == [f"{n}/20" for n in range(2, 21, 2)]  # no bar drawn into a file, no httpx lines
