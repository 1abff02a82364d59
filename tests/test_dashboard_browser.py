"""The dashboard in a real browser, on a ledger a real gateway wrote (fake tiers a fake judge can
tell apart, the shipped router, judged samples, feedback, refusals): no exception on the page, no
traceback in the server's log, no developer toolbar, and screenshots to look at."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from router import Router, default_artifact_dir
from tests.browser import chromium_path, render
from tests.conftest import REPO, GatewayFactory, free_port
from tests.dashboard_data import MASTER, drive, gateway_policy, settle, spread_over

OUT = REPO / "bench" / "out"
MENU_ITEMS = """new Promise(done => {
  const button = document.querySelector('[data-testid="stMainMenuButton"]');
  if (!button) { done(null); return; }
  button.click();
  setTimeout(() => {
    const menu = document.querySelector('[data-testid="stMainMenuPopover"]');
    const items = menu ? menu.innerText.split('\\n') : [];
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}));
    button.click();
    setTimeout(() => done(items), 300);
  }, 700);
})"""


@pytest.fixture
def gateway_ledger(
    start_gateway: GatewayFactory, fake_upstream: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("TIERWISE_MASTER_KEY", MASTER)
    gw = start_gateway(gateway_policy(fake_upstream), router=Router.load(default_artifact_dir()))
    statuses = drive(gw.url)
    assert {"200", "400", "401", "404", "429"} <= set(statuses), statuses
    assert settle(gw.db_path) >= 40  # about half of the answered requests are judged
    assert gw.rows("steps IS NOT NULL")  # hard tool calls went up a tier (or two)
    spread_over(gw.db_path, timedelta(hours=2))
    yield gw.db_path


@pytest.fixture
def dashboard(gateway_ledger: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``streamlit run`` on the app from another directory, naming the ledger by a relative path
    (resolved against that directory, as the gateway would) and passing no toolbar option."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    env = {**os.environ, "TIERWISE_DATABASE_URL": f"sqlite:///{gateway_ledger.name}"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"), "--server.port", str(port)],
            cwd=gateway_ledger.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/_stcore/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"the dashboard did not answer on {url} within 60 s: {log.read_text()[-2000:]}")
    yield url, log
    proc.terminate()
    proc.wait(timeout=10)


def test_dashboard_renders_in_chromium(dashboard: tuple[str, Path]) -> None:
    if chromium_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(".ci/run installs chromium; it must be present under CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    url, log = dashboard
    top, quality = OUT / "dashboard.png", OUT / "dashboard-quality.png"
    probes = render(
        url,
        [(top, None), (quality, "document.getElementById('quality').scrollIntoView()")],
        "document.querySelectorAll('[data-testid=\"stMetric\"]').length >= 12",
        probes={
            "deploy": "document.querySelectorAll('[data-testid=\"stAppDeployButton\"]').length",
            "menu": MENU_ITEMS,
            "headline": "Array.from(document.querySelectorAll('[data-testid=\"stAlert\"]')).map(e => e.innerText)",
            "quality": "document.getElementById('quality') !== null",
        },
    )
    assert probes["ready"], probes
    assert probes["exceptions"] == 0
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert "Print" in probes["menu"] and not {"Rerun", "Clear cache", "Deploy"} & set(probes["menu"]), probes["menu"]
    assert probes["deploy"] == 0
    assert probes["quality"] and any(h.startswith("Saved ") and "measured" in h for h in probes["headline"]), probes
    assert any(m.startswith("Measured quality") for m in probes["metrics"]), probes["metrics"]
    assert probes["charts"] >= 8
    assert top.stat().st_size > 50_000 and quality.stat().st_size > 50_000
