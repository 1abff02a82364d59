"""Tierwise dashboard: spend, savings and quality at a glance (Streamlit, read-only).

tierwise dashboard            # same TIERWISE_DATABASE_URL / TIERWISE_POLICY_PATH as the gateway
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import altair as alt
import pandas as pd
import streamlit as st
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from dashboard import queries as q
from dashboard.db import readonly_engine
from gateway.policy.loader import LoadedPolicy, PolicyError, load_policy
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


def _sidebar(engine: Engine) -> tuple[q.Filters, timedelta | None, bool]:
    st.sidebar.header("Filters")
    label = st.sidebar.selectbox("Time window", list(WINDOWS), index=2)
    window = WINDOWS[label]
    now = datetime.now(UTC)
    routes = st.sidebar.multiselect("Route", q.distinct_values(engine, "route"))
    tiers = st.sidebar.multiselect("Tier", q.distinct_values(engine, "tier"))
    keys = st.sidebar.multiselect("API key", q.distinct_values(engine, "api_key_id"))
    refresh = st.sidebar.toggle("Auto-refresh every 10 s", value=False)
    f = q.Filters(
        since=now - window if window else None, routes=tuple(routes), tiers=tuple(tiers), api_keys=tuple(keys)
    )
    return f, window, refresh


def _top_row(s: q.Summary) -> None:
    cols = st.columns(6)
    cols[0].metric("Spend", _usd(s.spend_usd))
    cols[1].metric("Requests", f"{s.requests:,}")
    cols[2].metric(
        "Saved vs all-frontier",
        _usd(s.savings_usd),
        _pct(s.savings_pct),
        help="counterfactual: the same tokens at the frontier tier's price",
    )
    cols[3].metric("Cost per 1k requests", _usd(s.cost_per_1k))
    cols[4].metric("Error rate", _pct(s.error_rate))
    cols[5].metric("Fallback rate", _pct(s.fallback_rate))


def _charts(engine: Engine, f: q.Filters, window: timedelta | None) -> None:
    unit = q.bucket_for(window or timedelta(days=365))
    left, right = st.columns(2)
    with left:
        st.subheader("Spend over time by tier")
        rows = q.spend_over_time(engine, f, unit)
        if rows:
            df = pd.DataFrame(rows)
            df["bucket"] = pd.to_datetime(df["bucket"])
            chart = (
                alt.Chart(df)
                .mark_bar()
                .encode(
                    x=alt.X("bucket:T", title=unit),
                    y=alt.Y("sum(spend_usd):Q", title="USD"),
                    color="tier:N",
                    tooltip=["bucket:T", "tier:N", "spend_usd:Q", "requests:Q"],
                )
            )
            st.altair_chart(chart, width="stretch")
        else:
            st.info("No requests in this window.")
    with right:
        st.subheader("Request mix")
        a, b = st.columns(2)
        for col, column in ((a, "tier"), (b, "route")):
            rows = q.mix(engine, f, column)
            if rows:
                df = pd.DataFrame(rows).fillna("(none)")
                col.altair_chart(
                    alt.Chart(df, title=f"by {column}")
                    .mark_arc(innerRadius=40)
                    .encode(theta="requests:Q", color=f"{column}:N", tooltip=[f"{column}:N", "requests:Q"]),
                    width="stretch",
                )
            else:
                col.caption(f"No requests to break down by {column}.")

    left, right = st.columns(2)
    with left:
        st.subheader("Latency by tier")
        lat = q.latency_percentiles(engine, f)
        if lat:
            df = pd.DataFrame(lat).melt(id_vars="tier", var_name="measure", value_name="ms").dropna()
            df["measure"] = df["measure"].str.replace("_ms", "").str.replace("_", " ")
            st.altair_chart(
                alt.Chart(df)
                .mark_bar()
                .encode(
                    x=alt.X("measure:N", title=None),
                    y="ms:Q",
                    color="measure:N",
                    column=alt.Column("tier:N"),
                    tooltip=["tier", "measure", "ms"],
                ),
            )
        else:
            st.info("No successful requests yet to measure latency on.")
    with right:
        st.subheader("Router scores")
        _router_chart(engine, f)

    st.subheader("Quality signals by tier")
    st.info(
        "No quality signals recorded yet. This chart fills once feedback (thumbs up/down), judge scores or "
        "escalations (a client retrying on a higher tier) are written to the ledger."
    )


def _router_chart(engine: Engine, f: q.Filters) -> None:
    rows = q.router_scores(engine, f)
    loaded = _policy()
    weight = loaded.policy.router.cost_weight if loaded and loaded.policy.router else None
    if not rows:
        st.info('No auto-routed requests yet: send `model="auto"` to see the router\'s predicted quality per tier.')
        return
    long = [
        {"tier scored": t, "predicted quality": v, "routed to": r["tier"]}
        for r in rows
        for t, v in json.loads(r["router_scores"]).items()
    ]
    df = pd.DataFrame(long)
    chart = (
        alt.Chart(df)
        .mark_bar(opacity=0.7)
        .encode(
            x=alt.X("predicted quality:Q", bin=alt.Bin(maxbins=30)),
            y="count():Q",
            color="tier scored:N",
            tooltip=["tier scored", "count()"],
        )
    )
    st.altair_chart(chart, width="stretch")
    note = f"cost weight {weight}" if weight is not None else "the artifact's calibrated default cost weight"
    st.caption(f"Decision rule: the tier maximising predicted quality − cost weight × predicted cost ({note}).")


def _tables(engine: Engine, f: q.Filters) -> None:
    st.subheader("Where the money goes")
    tabs = st.tabs(["By API key", "By route", "By model", "Most expensive requests"])
    tables = [q.spend_by(engine, f, c) for c in ("api_key_id", "route", "upstream_model")] + [
        q.top_expensive(engine, f)
    ]
    for tab, rows in zip(tabs, tables, strict=True):
        if rows:
            tab.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)
        else:
            tab.caption("Nothing yet.")

    st.subheader("Recent requests")
    recent = q.recent(engine, f)
    if not recent:
        st.caption("No requests in this window.")
        return
    st.dataframe(pd.DataFrame(recent), width="stretch", hide_index=True)
    pick = st.selectbox("Inspect a request", [r["request_id"] for r in recent])
    detail = q.request_detail(engine, pick) if pick else None
    if detail:
        for key in ("router_scores", "fallbacks"):
            if detail.get(key):
                detail[key] = json.loads(detail[key])
        st.json({k: (str(v) if isinstance(v, datetime) else v) for k, v in detail.items()})


def _policy() -> LoadedPolicy | None:
    try:
        return load_policy(_settings().policy_path)
    except PolicyError:
        return None


def _policy_section() -> None:
    with st.expander("Current policy", expanded=False):
        loaded = _policy()
        if loaded is None:
            st.caption(f"No valid policy at {_settings().policy_path}.")
            return
        policy = loaded.policy
        rows = []
        for tier in policy.tiers:
            for dep in tier.deployments:
                price = loaded.price(dep.name)
                rows.append(
                    {
                        "tier": tier.name,
                        "deployment": dep.name,
                        "model": dep.model,
                        "$ in / 1M": price.input_per_1m,
                        "$ out / 1M": price.output_per_1m,
                        "price from": "policy" if dep.price is not None else "litellm price map",
                        "key from": dep.api_key_env or "–",
                    }
                )
        st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)
        st.write(
            "Routes:",
            ", ".join(f"`{r.name}` → {'router' if r.auto else 'tier ' + str(r.tier)}" for r in policy.routes),
        )
        st.write("Router:", policy.router.model_dump() if policy.router else "disabled")


def _settings() -> Settings:
    return Settings()  # read on every run: cheap, and the environment is the one source


def _has_ledger(engine: Engine) -> bool:
    try:
        return inspect(engine).has_table("requests")
    except OperationalError:
        return False  # no database file yet: the gateway has not run


def main() -> None:
    st.set_page_config(page_title="Tierwise", page_icon="💸", layout="wide")
    st.title("Tierwise — spend, savings and quality")
    url = _settings().database_url
    engine = _engine(url)
    if not _has_ledger(engine):
        st.info(
            f"The ledger at `{url.split('@')[-1]}` is empty: start the gateway (`make serve`) and send some traffic "
            "(`tierwise demo-traffic`), then refresh."
        )
        _policy_section()
        return
    f, window, refresh = _sidebar(engine)

    @st.fragment(run_every="10s" if refresh else None)
    def body() -> None:
        started = time.perf_counter()
        s = q.summary(engine, f)
        _top_row(s)
        if s.requests == 0:
            st.info(
                "No requests match these filters yet. "
                "Widen the time window, or send traffic with `tierwise demo-traffic`."
            )
        _charts(engine, f, window)
        _tables(engine, f)
        st.caption(
            f"Queried in {(time.perf_counter() - started) * 1000:.0f} ms · {datetime.now(UTC):%H:%M:%S} UTC · read-only"
        )

    body()
    _policy_section()


main()
