"""The dashboard's traffic figures equal the SQL truth; it reads the database the gateway names,
says which file it looked for, shows the policy the gateway recorded, and never writes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.queries import Filters, bucket_seconds, spend_by, spend_over_time
from dashboard.tiers import PALETTE, TierColours
from gateway.ledger import make_engine
from tests.conftest import REPO, free_port
from tests.dashboard_data import SNAPSHOT_POLICY, build, engine_for, seed, write

APP = str(REPO / "dashboard" / "app.py")


def run_app(url: str | None, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    if url is None:
        monkeypatch.delenv("TIERWISE_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("TIERWISE_DATABASE_URL", url)
    # The dashboard must not read this file: it shows the policy the gateway recorded.
    monkeypatch.setenv("TIERWISE_POLICY_PATH", str(REPO / "policies" / "default.yaml"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, Any]:
    return {m.label: m.value for m in at.metric}


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def test_traffic_figures_equal_sql_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ledger.db"
    seed(db, quality=True)  # with the gateway's own shadow and judge calls, which are not traffic
    at = run_app(f"sqlite:///{db}", monkeypatch)
    con = sqlite3.connect(db)
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    n, spend, frontier, answered, refused, failed, fallbacks = con.execute(
        "SELECT count(*), sum(cost_usd), sum(frontier_cost_usd), sum(status_code < 400), "
        "sum(status_code BETWEEN 400 AND 499), sum(status_code >= 500), sum(fallbacks IS NOT NULL) "
        "FROM requests WHERE created_at >= ? AND purpose = 'client'",
        (since,),
    ).fetchone()
    (own,) = con.execute(
        "SELECT sum(cost_usd) FROM requests WHERE purpose != 'client' AND created_at >= ?", (since,)
    ).fetchone()
    assert own > 0 and refused > 0 and failed > 0
    m = metrics(at)
    assert m["Requests"] == f"{n:,}"
    assert m["Spend"] == f"${spend:,.4f}"
    # savings are net of what measuring quality cost (shadow answers and judge calls)
    assert m["Saved vs all-frontier"] == f"${frontier - spend - own:,.4f}"
    (cached,) = con.execute(
        "SELECT sum(uncached_cost_usd - cost_usd) FROM requests WHERE created_at >= ? AND purpose = 'client'",
        (since,),
    ).fetchone()
    assert cached > 0 and m["Caching saved"] == f"${cached:,.4f}"
    assert m["Refused (4xx)"] == f"{refused / n:.1%}"
    assert m["Failed (5xx)"] == f"{failed / n:.1%}"
    assert m["Fallback rate"] == f"{fallbacks / n:.1%}"
    assert m["Cost per 1k answers"] == f"${spend / answered * 1000:,.4f}"
    saved = next(x for x in at.metric if x.label == "Saved vs all-frontier")
    assert saved.delta == f"{(frontier - spend - own) / frontier:.1%}"

    # Refusals are listed by status and error, as the ledger has them.
    truth = con.execute(
        "SELECT status_code, error_type, count(*) FROM requests WHERE created_at >= ? AND purpose = 'client' "
        "AND status_code >= 400 GROUP BY 1, 2",
        (since,),
    ).fetchall()
    shown = next(d.value for d in at.dataframe if "error_type" in d.value.columns and "keys" in d.value.columns)
    assert sorted(shown[["status_code", "error_type", "requests"]].itertuples(index=False, name=None)) == sorted(truth)

    # Filters narrow every figure: tier = frontier only.
    at.sidebar.multiselect[1].select("frontier").run()
    (n_f,) = con.execute(
        "SELECT count(*) FROM requests WHERE created_at >= ? AND tier = 'frontier' AND purpose = 'client'", (since,)
    ).fetchone()
    m = metrics(at)
    # all on the frontier: nothing saved but the cost of measuring it, too few judged to claim anything
    (own_f,) = con.execute(
        "SELECT coalesce(sum(o.cost_usd), 0) FROM requests o JOIN requests p ON p.request_id = o.parent_request_id "
        "WHERE p.created_at >= ? AND p.tier = 'frontier' AND p.purpose = 'client'",
        (since,),
    ).fetchone()
    assert m["Requests"] == f"{n_f:,}" and m["Saved vs all-frontier"] == "not yet measured"
    saved = next(x for x in at.metric if x.label == "Saved vs all-frontier")
    assert saved.delta.startswith(f"${-own_f:,.4f} (") and saved.delta.endswith("before quality is measured")

    # One conversation: every turn of it, on any tier.
    at.sidebar.multiselect[1].unselect("frontier").run()
    at.sidebar.text_input[0].input("conv-1").run()
    (n_s,) = con.execute(
        "SELECT count(*) FROM requests WHERE created_at >= ? AND session_id = 'conv-1' AND purpose = 'client'", (since,)
    ).fetchone()
    assert 0 < n_s < n and metrics(at)["Requests"] == f"{n_s:,}"


def test_the_cache_read_share_by_tier_and_key_is_the_ledgers(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    seed(db)
    con = sqlite3.connect(db)
    for column in ("tier", "api_key_id"):
        truth = dict(
            con.execute(
                f"SELECT {column}, 1.0 * sum(cache_read_tokens) / nullif(sum(prompt_tokens), 0) FROM requests "
                f"WHERE purpose = 'client' GROUP BY {column}"
            ).fetchall()
        )
        shown = {r[column]: r["cache_read_share"] for r in spend_by(engine_for(db), Filters(), (column,))[column]}
        assert shown.keys() == truth.keys() and any(v for v in truth.values())
        for k, v in truth.items():
            assert shown[k] == pytest.approx(v) if v is not None else shown[k] is None
    con.close()


def test_a_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started from another directory, with the default URL: it names the file it looked for
    (resolved against the working directory, as the gateway resolves it) and says it is missing."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    at = run_app(None, monkeypatch)
    (warning,) = [w.value for w in at.warning]
    assert f"No ledger at `{elsewhere / 'tierwise.db'}`: the file does not exist" in warning
    assert not at.metric and "empty" not in warning


def test_an_empty_ledger_says_what_fills_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "empty.db"
    engine_for(db).dispose()
    at = run_app(f"sqlite:///{db}", monkeypatch)
    assert metrics(at)["Requests"] == "0"
    assert any("No requests match" in i.value for i in at.info)
    assert any("Turn sampling on" in i.value and "quality: {sample_rate" in i.value for i in at.info)
    assert any("No policy recorded" in c.value for c in at.caption)
    # A database without the ledger's tables is not a ledger.
    bare = tmp_path / "bare.db"
    sqlite3.connect(bare).execute("CREATE TABLE other (x INTEGER)").connection.commit()
    at = run_app(f"sqlite:///{bare}", monkeypatch)
    assert any(f"`{bare}` holds no ledger yet" in w.value for w in at.warning)


def test_the_policy_shown_is_the_one_the_gateway_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ledger.db"
    seed(db, 60, snapshot=SNAPSHOT_POLICY)
    at = run_app(f"sqlite:///{db}", monkeypatch)  # TIERWISE_POLICY_PATH names policies/default.yaml
    expander = next(e for e in at.expander if e.label.startswith("Current policy"))
    header = " ".join(m.value for m in expander.markdown)
    assert "/etc/tierwise/running.yaml" in header and "sha256" in header
    deployments = expander.dataframe[0].value
    assert list(deployments["deployment"]) == ["snap-local", "snap-mid", "snap-frontier"]
    frontier = deployments.set_index("deployment").loc["snap-frontier"]
    assert frontier["price from"] == "litellm price map" and frontier["$ in / 1M"] > 0
    assert deployments["$ in / 1M"].dtype == "float64"  # one type per column: no Arrow fallback
    assert expander.code[0].value.strip() == SNAPSHOT_POLICY.strip()


def test_tiers_have_one_colour_in_every_chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ledger.db"
    seed(db, quality=True, snapshot=SNAPSHOT_POLICY)
    at = run_app(f"sqlite:///{db}", monkeypatch)
    expected = {"local": PALETTE[0], "mid": PALETTE[1], "frontier": PALETTE[2]}
    coloured = 0
    for spec in chart_specs(at):
        for layer in [spec, *spec.get("layer", [])]:
            color = layer.get("encoding", {}).get("color", {})
            domain = color.get("scale", {}).get("domain", [])
            if color.get("field") in ("tier", "tier scored") or set(domain) & set(expected):
                tiers = [t for t in domain if t in expected]
                assert tiers == [t for t in expected if t in tiers], domain  # in tier order
                assert all(dict(zip(domain, color["scale"]["range"], strict=True))[t] == expected[t] for t in tiers)
                coloured += 1
    assert coloured >= 7  # spend, mix, latency, router, adequacy, quality over time, checks
    assert "Count of Records" not in json.dumps(chart_specs(at))
    router = next(s for s in chart_specs(at) if s["encoding"].get("color", {}).get("field") == "tier scored")
    assert router["encoding"]["y"]["title"] == "requests"
    assert TierColours.of(["b", "a"], ["c", "a"]).order == ("b", "a", "c")  # the policy's order, then the ledger's


def test_time_buckets_follow_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    assert bucket_seconds(now - timedelta(hours=1), now) == 60  # minutes for an hour
    assert bucket_seconds(now - timedelta(days=1), now) == 3600  # hours for a day
    assert bucket_seconds(now - timedelta(minutes=3), now) == 10  # a short demo: several bars
    assert bucket_seconds(None, None) == 10
    # A three-minute demo in the default 24-hour window: 10 s bars, spend adding up to the total.
    tables = build(90)
    for i, r in enumerate(tables["requests"]):
        r["created_at"] = now - timedelta(seconds=2 * i)
    db = tmp_path / "demo.db"
    write(db, tables)
    at = run_app(f"sqlite:///{db}", monkeypatch)
    spend = next(s for s in chart_specs(at) if s["mark"]["type"] == "rect")
    assert spend["encoding"]["x"]["title"] == "time (UTC), per 10 s"
    engine = make_engine(f"sqlite:///{db}")
    rows = spend_over_time(engine, Filters(since=now - timedelta(days=1)), 10)
    assert len({r["bucket"] for r in rows}) >= 18
    (total,) = sqlite3.connect(db).execute("SELECT sum(cost_usd) FROM requests").fetchone()
    assert sum(r["spend_usd"] for r in rows) == pytest.approx(total)


def test_dashboard_never_writes(tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from dashboard.db import readonly_engine

    db = tmp_path / "ledger.db"
    seed(db, 10)
    with pytest.raises(OperationalError, match="readonly"), readonly_engine(f"sqlite:///{db}").begin() as conn:
        conn.execute(text("DELETE FROM requests"))


def test_tierwise_dashboard_is_the_server(tmp_path: Path) -> None:
    """`tierwise dashboard` execs streamlit, so stopping the process stops the server itself."""
    db = tmp_path / "ledger.db"
    seed(db, 10)
    port = free_port()
    env = {**os.environ, "TIERWISE_DATABASE_URL": f"sqlite:///{db}"}
    cmd = [sys.executable, "-m", "gateway.cli", "dashboard", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the dashboard did not answer within 60 s")
    proc.terminate()
    proc.wait(timeout=10)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=2)


def test_demo_traffic_populates_the_ledger(start_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from gateway.demo.traffic import SAMPLE_PROMPTS, run_demo

    gw = start_gateway((REPO / "policies" / "fake.yaml").read_text())
    summary = asyncio.run(run_demo(gw.v1, 30, 4, list(SAMPLE_PROMPTS)))
    assert summary.requests == 30 and set(summary.by_tier) <= {"local", "mid", "frontier"}
    rows = gw.rows(wait_for=30)
    assert len(rows) == 30 and len({r["route"] for r in rows}) >= 2  # a mix of routes, all ledgered
