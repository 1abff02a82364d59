"""The dashboard: figures equal the SQL truth, the empty state, and a real browser render."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from gateway.ledger import create_schema, make_engine
from gateway.ledger.models import LedgerEntry
from tests.browser import chromium_path, render
from tests.conftest import REPO, free_port

APP = str(REPO / "dashboard" / "app.py")


def seed(db: Path, n: int = 300) -> None:
    engine = make_engine(f"sqlite:///{db}")
    create_schema(engine)
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        tier = ("local", "mid", "frontier")[i % 3]
        p, c = 100 + i, 20 + i % 50
        price = {"local": (0, 0), "mid": (0.15, 0.6), "frontier": (2.5, 10)}[tier]
        rows.append(
            {
                "request_id": uuid.uuid4().hex,
                "created_at": now - timedelta(hours=(i % 48)),  # half inside the last 24 h
                "api_key_id": ("key_a", "key_b", None)[i % 3],
                "route": ("auto", "cheap")[i % 2],
                "requested_model": "auto",
                "tier": tier,
                "deployment": f"d-{tier}",
                "upstream_model": f"fake/{tier}",
                "router_scores": json.dumps({"local": 0.4, "mid": 0.6, "frontier": 0.8}) if i % 2 == 0 else None,
                "prompt_tokens": p,
                "completion_tokens": c,
                "cost_usd": (p * price[0] + c * price[1]) / 1e6,
                "frontier_cost_usd": (p * 2.5 + c * 10) / 1e6,
                "ttft_ms": 50.0 + i,
                "latency_ms": 100.0 + i,
                "status_code": 502 if i % 20 == 0 else 200,
                "fallbacks": json.dumps(["x"]) if i % 10 == 0 else None,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(LedgerEntry.__table__), rows)  # type: ignore[attr-defined]
    engine.dispose()


def run_app(db: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TIERWISE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("TIERWISE_POLICY_PATH", str(REPO / "policies" / "fake.yaml"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_figures_equal_sql_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ledger.db"
    seed(db)
    at = run_app(db, monkeypatch)
    metrics = {m.label: m.value for m in at.metric}
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    n, spend, frontier, errors, fallbacks = (
        sqlite3.connect(db)
        .execute(
            "SELECT count(*), sum(cost_usd), sum(frontier_cost_usd), sum(status_code >= 400), sum(fallbacks IS NOT NULL) "
            "FROM requests WHERE created_at >= ?",
            (since,),
        )
        .fetchone()
    )
    assert metrics["Requests"] == f"{n:,}"
    assert metrics["Spend"] == f"${spend:,.4f}"
    assert metrics["Saved vs all-frontier"] == f"${frontier - spend:,.4f}"
    assert metrics["Error rate"] == f"{errors / n:.1%}"
    assert metrics["Fallback rate"] == f"{fallbacks / n:.1%}"
    assert metrics["Cost per 1k requests"] == f"${spend / n * 1000:,.4f}"
    saved = next(m for m in at.metric if m.label == "Saved vs all-frontier")
    assert saved.delta == f"{(frontier - spend) / frontier:.1%}"

    # filters narrow every figure: tier = frontier only
    at.sidebar.multiselect[1].select("frontier").run()
    metrics = {m.label: m.value for m in at.metric}
    (n_f,) = (
        sqlite3.connect(db)
        .execute("SELECT count(*) FROM requests WHERE created_at >= ? AND tier = 'frontier'", (since,))
        .fetchone()
    )
    assert metrics["Requests"] == f"{n_f:,}" and metrics["Saved vs all-frontier"] == "$0.0000"


def test_empty_and_missing_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(tmp_path / "never-written.db", monkeypatch)
    assert any("empty" in i.value for i in at.info)
    db = tmp_path / "empty.db"
    create_schema(make_engine(f"sqlite:///{db}"))
    at = run_app(db, monkeypatch)
    assert {m.label: m.value for m in at.metric}["Requests"] == "0"
    assert any("No requests" in i.value for i in at.info)
    assert any("quality signals" in i.value for i in at.info)  # an empty state that says what fills it


def test_dashboard_never_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from dashboard.db import readonly_engine

    db = tmp_path / "ledger.db"
    seed(db, 10)
    with pytest.raises(OperationalError, match="readonly"), readonly_engine(f"sqlite:///{db}").begin() as conn:
        conn.execute(text("DELETE FROM requests"))


@pytest.fixture
def dashboard_server(tmp_path: Path) -> Iterator[str]:
    db = tmp_path / "ledger.db"
    seed(db, 500)
    port = free_port()  # a fixed port collides with anything left listening there
    env = {
        **os.environ,
        "TIERWISE_DATABASE_URL": f"sqlite:///{db}",
        "TIERWISE_POLICY_PATH": str(REPO / "policies" / "fake.yaml"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "dashboard", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
        pytest.fail(f"the dashboard did not answer on {url} within 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    # `tierwise dashboard` execs streamlit, so stopping the process stopped the server itself
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/_stcore/health", timeout=2)


def test_dashboard_renders_in_chromium(dashboard_server: str) -> None:
    if chromium_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(".ci/run installs chromium; it must be present under CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = REPO / "bench" / "out" / "dashboard.png"
    probes = render(dashboard_server, shot, "document.querySelectorAll('[data-testid=\"stMetric\"]').length >= 6")
    assert probes["ready"], probes
    assert probes["exceptions"] == 0
    assert any(m.startswith("Spend") for m in probes["metrics"])
    assert probes["charts"] >= 3
    assert shot.stat().st_size > 50_000


def test_demo_traffic_populates_the_ledger(start_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from gateway.demo.traffic import SAMPLE_PROMPTS, run_demo

    gw = start_gateway((REPO / "policies" / "fake.yaml").read_text())
    counts = asyncio.run(run_demo(gw.v1, 30, 4, list(SAMPLE_PROMPTS)))
    assert sum(counts.values()) == 30 and set(counts) <= {"local", "mid", "frontier"}
    rows = gw.rows(wait_for=30)
    assert len(rows) == 30 and len({r["route"] for r in rows}) >= 2  # a mix of routes, all ledgered
