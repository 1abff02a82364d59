"""Tierwise dashboard: spend, savings and measured quality at a glance (Streamlit, read-only).

tierwise dashboard            # reads the gateway's database (TIERWISE_DATABASE_URL), as the gateway does
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from dashboard import charts
from dashboard import quality_queries as qq
from dashboard import queries as q
from dashboard.db import readonly_engine
from dashboard.policy_view import RunningPolicy, policy_section, running_policy
from dashboard.quality import QUALITY_TABLES, headline_metric, quality_section
from dashboard.source import open_ledger
from dashboard.tiers import TierColours
from gateway.settings import Settings

WINDOWS = {
    "Last 15 minutes": timedelta(minutes=15),
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
}


@st.cache_resource
def _engine(url: str) -> Engine:
    return readonly_engine(url)


def _usd(v: float | None) -> str:
    if v is None:
        return "–"
    return f"${v:,.4f}" if abs(v) < 10 else f"${v:,.2f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _sidebar(engine: Engine) -> tuple[q.Filters, bool]:
    st.sidebar.header("Filters")
    label = st.sidebar.selectbox("Time window", list(WINDOWS), index=2)
    window = WINDOWS[label]
    routes = st.sidebar.multiselect("Route", q.distinct_values(engine, "route"))
    tiers = st.sidebar.multiselect("Tier", q.distinct_values(engine, "tier"))
    keys = st.sidebar.multiselect("API key", q.distinct_values(engine, "api_key_id"))
    session = st.sidebar.text_input(
        "Conversation", placeholder="session id", help="x-tierwise-session, or the id the gateway answered with"
    )
    refresh = st.sidebar.toggle("Auto-refresh every 10 s", value=False)
    since = datetime.now(UTC) - window if window else None
    filters = q.Filters(
        since=since, routes=tuple(routes), tiers=tuple(tiers), api_keys=tuple(keys), session=session.strip() or None
    )
    return filters, refresh


def _top_row(s: q.Summary, judged: qq.Judged | None, frontier: str | None) -> None:
    first, second = st.columns(5), st.columns(4)
    first[0].metric("Spend", _usd(s.spend_usd))
    est = judged.quality.estimate() if judged else None
    net = f"{_usd(s.savings_usd)} ({_pct(s.savings_pct)})"
    base = f"`{frontier}`'s" if frontier else "the frontier tier's"
    counterfactual = (
        f"the same tokens at {base} list price, whether or not it was reachable, minus spend and minus "
        f"{_usd(s.measuring_usd)} spent measuring quality (shadow answers and judge calls)"
    )
    if est is not None and est.enough:
        first[1].metric("Saved vs all-frontier", _usd(s.savings_usd), _pct(s.savings_pct), help=counterfactual)
    else:
        first[1].metric(
            "Saved vs all-frontier",
            "not yet measured",
            f"{net} before quality is measured",
            delta_color="off",
            delta_arrow="off",
            help=f"{counterfactual}. Claimed only beside a measured quality: see Quality below.",
        )
    first[2].metric(
        "Caching saved",
        _usd(s.caching_saved_usd),
        f"{_pct(s.cache_read_share)} of input from cache",
        delta_color="off",
        delta_arrow="off",
        help="the same tokens billed without prompt caching, minus spend: reads at the cached rate, "
        "writes at the write rate (a write never read back counts against it)",
    )
    headline_metric(first[3], est)
    first[4].metric(
        "Cost per 1k answers", _usd(s.cost_per_1k), help="spend per 1,000 answered requests (refused ones cost nothing)"
    )
    second[0].metric("Requests", f"{s.requests:,}", help="client requests, refused ones included")
    second[1].metric(
        "Refused (4xx)",
        _pct(s.rate(s.refused)),
        help="turned away before any upstream was asked: unknown or revoked keys, permissions, rate limits, "
        "budgets, invalid or oversized requests",
    )
    second[2].metric(
        "Failed (5xx)",
        _pct(s.rate(s.failed)),
        help="accepted, but no upstream answered (every deployment failed, or an internal error)",
    )
    second[3].metric("Fallback rate", _pct(s.rate(s.fallbacks)), help="served off the path asked for")


def _traffic(engine: Engine, f: q.Filters, colours: TierColours, bucket_s: int) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Spend over time by tier")
        rows = q.spend_over_time(engine, f, bucket_s)
        if rows:
            st.altair_chart(charts.spend_chart(rows, bucket_s, colours), width="stretch")
        else:
            st.info("No requests in this window.")
    with right:
        st.subheader("Answered requests")
        a, b = st.columns(2)
        mixes = q.mix(engine, f, ("tier", "route"))
        for col, column in ((a, "tier"), (b, "route")):
            rows = mixes[column]
            if rows:
                col.altair_chart(charts.mix_chart(rows, column, colours), width="stretch")
            else:
                col.caption(f"No answered requests to break down by {column}.")
        st.caption(f"{charts.DIRECT}: the client named a tier or a deployment rather than a route.")

    left, right = st.columns(2)
    with left:
        st.subheader("Latency by tier")
        lat = q.latency_percentiles(engine, f)
        if lat:
            st.altair_chart(charts.latency_chart(lat, colours), width="stretch")
        else:
            st.info("No answered requests yet to measure latency on.")
    with right:
        st.subheader("Router scores")
        rows = q.router_scores(engine, f)
        if rows:
            st.altair_chart(charts.router_chart(rows, colours), width="stretch")
            st.caption(
                "The router's predicted quality per tier for each auto-routed request. It picks the tier "
                "maximising predicted quality − cost weight × predicted cost."
            )
        else:
            st.info('No auto-routed requests yet: send `model="auto"` to see the router\'s predicted quality per tier.')


_JSON_COLUMNS = ("router_scores", "fallbacks", "checks", "steps", "predicted", "verdicts")


def _json_columns(detail: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in detail.items():
        parsed = json.loads(v) if k in _JSON_COLUMNS and isinstance(v, str) else v
        out[k] = str(parsed) if isinstance(parsed, (datetime, bytes)) else parsed
    return out


def _tables(engine: Engine, f: q.Filters, has_quality: bool) -> None:
    st.subheader("Where the money goes")
    names = ["By API key", "By tier", "By route", "By model", "Most expensive requests", "Refused and failed"]
    tables = list(q.spend_by(engine, f, ("api_key_id", "tier", "route", "upstream_model")).values())
    tables += [q.top_expensive(engine, f), q.refusals(engine, f)]
    for tab, rows in zip(st.tabs(names), tables, strict=True):
        if rows:
            tab.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)
        else:
            tab.caption("Nothing in this selection.")

    st.subheader("Recent requests")
    recent = q.recent(engine, f)
    if not recent:
        st.caption("No requests in this window.")
        return
    st.dataframe(pd.DataFrame(recent), width="stretch", hide_index=True)
    pick = st.selectbox("Inspect a request", [r["request_id"] for r in recent])
    detail = q.request_detail(engine, pick) if pick else None
    if detail:
        shown: dict[str, Any] = {"request": _json_columns(detail)}
        if has_quality:
            for name, found in qq.about_request(engine, str(pick)).items():
                if found:
                    shown[name] = [_json_columns(r) for r in found]
        st.json(shown)


def main() -> None:
    st.set_page_config(page_title="Tierwise", page_icon="💸", layout="wide")
    st.title("Tierwise — spend, savings and quality")
    ledger = open_ledger(Settings(), _engine)
    if ledger.problem is not None or ledger.engine is None:
        st.warning(ledger.problem)
        return
    engine = ledger.engine
    running: RunningPolicy | None = running_policy(engine) if "policy_snapshots" in ledger.tables else None
    colours = TierColours.of(running.tiers if running else None, q.tier_prices(engine))
    has_quality = ledger.tables >= QUALITY_TABLES
    f, refresh = _sidebar(engine)

    @st.fragment(run_every="10s" if refresh else None)
    def body() -> None:
        started = time.perf_counter()
        first, last = q.time_extent(engine, f)
        quality_bucket_s = q.bucket_seconds(first, last, max_bars=12)
        costs = qq.quality_cost(engine, f) if has_quality else []
        s = q.summary(engine, f, sum(float(r["cost_usd"]) for r in costs))
        judged = qq.judged_over_time(engine, f, quality_bucket_s) if has_quality else None
        policy = running.policy if running else None
        _top_row(s, judged[0] if judged else None, policy.frontier.deployments[0].name if policy else None)
        if s.requests == 0:
            st.info(
                "No requests match these filters yet. "
                "Widen the time window, or send traffic with `tierwise demo-traffic`."
            )
        _traffic(engine, f, colours, q.bucket_seconds(first, last))
        if judged is not None:
            quality_section(engine, f, s, judged, costs, colours, running, quality_bucket_s)
        else:
            st.header("Quality", anchor="quality")
            st.info(
                f"The database at `{ledger.where}` predates the quality tables: start the gateway once (it "
                "migrates the schema), then judged samples, feedback and checks show here."
            )
        _tables(engine, f, has_quality)
        st.caption(
            f"Read from `{ledger.where}` in {(time.perf_counter() - started) * 1000:.0f} ms · "
            f"{datetime.now(UTC):%H:%M:%S} UTC · read-only"
        )

    body()
    policy_section(running)


main()
