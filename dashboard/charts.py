"""The dashboard's charts (Altair). Tiers have one colour each, the same in every chart, in the
order of the policy the gateway runs; time axes are UTC."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from dashboard.tiers import NO_TIER, TierColours

__all__ = [
    "DIRECT",
    "SERVED",
    "adequacy_chart",
    "bucket_label",
    "calibration_chart",
    "checks_chart",
    "latency_chart",
    "mix_chart",
    "quality_over_time_chart",
    "router_chart",
    "spend_chart",
    "tier_scale",
]

DIRECT = "(direct)"  # no route: the client named a tier or a deployment
SERVED = "served traffic"  # the quality-over-time series of everything served, beside the tiers'


def tier_scale(colours: TierColours, seen: Sequence[str]) -> alt.Scale:
    domain = colours.domain(seen)
    return alt.Scale(domain=domain, range=[colours.colour(t) for t in domain])


def _tier_colour(colours: TierColours, seen: Sequence[str], field: str = "tier", title: str = "tier") -> alt.Color:
    return alt.Color(f"{field}:N", scale=tier_scale(colours, seen), sort=colours.domain(seen), title=title)


def bucket_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        n = seconds // 86400
        return "day" if n == 1 else f"{n} days"
    if seconds % 3600 == 0:
        n = seconds // 3600
        return "hour" if n == 1 else f"{n} hours"
    if seconds % 60 == 0:
        n = seconds // 60
        return "minute" if n == 1 else f"{n} minutes"
    return f"{seconds} s"


def _utc(epoch: pd.Series) -> pd.Series:
    return pd.to_datetime(epoch.astype("int64"), unit="s", utc=True)


def spend_chart(rows: list[dict[str, Any]], seconds: int, colours: TierColours) -> alt.Chart:
    """Stacked bars, one per bucket, each as wide as its bucket; tiers stacked in tier order."""
    df = pd.DataFrame(rows)
    df["tier"] = df["tier"].astype(str)
    df["spend_usd"] = df["spend_usd"].astype(float)
    df["start"] = _utc(df["bucket"])
    df["end"] = df["start"] + pd.Timedelta(seconds=seconds)
    df["rank"] = df["tier"].map(colours.rank)
    df = df.sort_values(["bucket", "rank"])
    df["top"] = df.groupby("bucket")["spend_usd"].cumsum()
    df["base"] = df["top"] - df["spend_usd"]
    chart: alt.Chart = (
        alt.Chart(df)
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("start:T", title=f"time (UTC), per {bucket_label(seconds)}", scale=alt.Scale(type="utc")),
            x2="end:T",
            y=alt.Y("base:Q", title="spend (USD)"),
            y2="top:Q",
            color=_tier_colour(colours, list(df["tier"])),
            tooltip=[
                alt.Tooltip("start:T", title="from (UTC)", format="%Y-%m-%d %H:%M:%S", formatType="utc"),
                "tier:N",
                alt.Tooltip("spend_usd:Q", title="spend (USD)", format="$.6f"),
                alt.Tooltip("requests:Q"),
            ],
        )
    )
    return chart


def mix_chart(rows: list[dict[str, Any]], column: str, colours: TierColours) -> alt.Chart:
    df = pd.DataFrame(rows)
    df[column] = df[column].fillna(NO_TIER if column == "tier" else DIRECT).astype(str)
    color: alt.Color = _tier_colour(colours, list(df[column]), column) if column == "tier" else alt.Color(f"{column}:N")
    chart: alt.Chart = (
        alt.Chart(df, title=f"by {column}")
        .mark_arc(innerRadius=40)
        .encode(theta="requests:Q", color=color, tooltip=[f"{column}:N", "requests:Q"])
    )
    return chart


def latency_chart(rows: list[dict[str, Any]], colours: TierColours) -> alt.Chart:
    df = pd.DataFrame(rows).melt(id_vars="tier", var_name="measure", value_name="ms").dropna()
    df["measure"] = df["measure"].str.removesuffix("_ms").str.replace("_", " ")
    tiers = colours.domain(df["tier"])
    chart: alt.Chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X(
                "measure:N",
                title=None,
                sort=["latency p50", "latency p95", "ttft p50", "ttft p95"],
                axis=alt.Axis(labelAngle=0),
            ),
            xOffset=alt.XOffset("tier:N", sort=tiers),
            y=alt.Y("ms:Q", title="milliseconds"),
            color=_tier_colour(colours, tiers),
            tooltip=["tier:N", "measure:N", alt.Tooltip("ms:Q", format=".1f")],
        )
    )
    return chart


def router_chart(rows: list[dict[str, Any]], colours: TierColours) -> alt.Chart:
    long = [
        {"tier scored": tier, "predicted quality": value}
        for r in rows
        for tier, value in json.loads(r["router_scores"]).items()
    ]
    df = pd.DataFrame(long)
    chart: alt.Chart = (
        alt.Chart(df)
        .mark_bar(opacity=0.75)
        .encode(
            x=alt.X("predicted quality:Q", bin=alt.Bin(maxbins=30, extent=[0, 1]), title="predicted quality"),
            y=alt.Y("count():Q", title="requests", stack=None),
            color=_tier_colour(colours, list(df["tier scored"]), "tier scored", "tier scored"),
            tooltip=["tier scored:N", alt.Tooltip("count():Q", title="requests")],
        )
    )
    return chart


def adequacy_chart(rows: list[dict[str, Any]], colours: TierColours, reference: str | None) -> alt.LayerChart:
    """Per tier: how often its answer was not beaten by the reference tier's, with the 95% interval."""
    df = pd.DataFrame(rows)
    tiers = colours.domain(df["tier"])
    x = alt.X("tier:N", sort=tiers, title=None, axis=alt.Axis(labelAngle=0))
    y_title = f"adequate against {reference}" if reference else "adequate against the reference tier"
    base = alt.Chart(df).encode(x=x, color=_tier_colour(colours, tiers))
    tooltip = [
        "tier:N",
        alt.Tooltip("adequacy:Q", format=".1%"),
        alt.Tooltip("low:Q", title="95% from", format=".1%"),
        alt.Tooltip("high:Q", title="95% to", format=".1%"),
        alt.Tooltip("n:Q", title="judged"),
    ]
    bars = base.mark_bar(opacity=0.85, width={"band": 0.6}).encode(
        y=alt.Y("adequacy:Q", title=y_title, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        tooltip=tooltip,
    )
    whiskers = base.mark_rule(color="#333", strokeWidth=1.5).encode(y="low:Q", y2="high:Q")
    labels = base.mark_text(dy=-8, color="#333").encode(y="high:Q", text=alt.Text("label:N"))
    return alt.LayerChart(layer=[bars, whiskers, labels])


def calibration_chart(rows: list[dict[str, Any]]) -> alt.LayerChart:
    """Judged adequacy per bin of predicted quality; on the diagonal the router is calibrated."""
    df = pd.DataFrame(rows)
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="#999")
        .encode(x="x:Q", y="y:Q")
    )
    x = alt.X("predicted:Q", title="router's predicted quality of the judged tier", scale=alt.Scale(domain=[0, 1]))
    base = alt.Chart(df).encode(x=x)
    whiskers = base.mark_rule(color="#3c78d8").encode(y="low:Q", y2="high:Q")
    points = base.mark_circle(color="#3c78d8", opacity=0.9).encode(
        y=alt.Y("adequacy:Q", title="judged adequacy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        size=alt.Size("n:Q", title="judged", scale=alt.Scale(range=[40, 400])),
        tooltip=[
            alt.Tooltip("bin:N", title="predicted"),
            alt.Tooltip("adequacy:Q", format=".1%"),
            alt.Tooltip("low:Q", title="95% from", format=".1%"),
            alt.Tooltip("high:Q", title="95% to", format=".1%"),
            alt.Tooltip("n:Q", title="judged"),
        ],
    )
    labels = base.mark_text(dy=-12, fontSize=10, color="#555").encode(y="high:Q", text="n:Q")
    return alt.LayerChart(layer=[diagonal, whiskers, points, labels])


def quality_over_time_chart(rows: list[dict[str, Any]], seconds: int, colours: TierColours) -> alt.Chart:
    df = pd.DataFrame(rows)
    df["start"] = _utc(df["bucket"])
    series = [*colours.domain(s for s in df["series"] if s != SERVED), SERVED]
    scale = alt.Scale(domain=series, range=[colours.colour(s) for s in series[:-1]] + ["#222222"])
    chart: alt.Chart = (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=alt.X("start:T", title=f"time (UTC), per {bucket_label(seconds)}", scale=alt.Scale(type="utc")),
            y=alt.Y("value:Q", title="judged quality", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.Color("series:N", scale=scale, sort=series, title=None),
            tooltip=[
                alt.Tooltip("start:T", title="from (UTC)", format="%Y-%m-%d %H:%M", formatType="utc"),
                "series:N",
                alt.Tooltip("value:Q", format=".1%"),
                alt.Tooltip("n:Q", title="judged"),
            ],
        )
    )
    return chart


def checks_chart(rows: list[dict[str, Any]], colours: TierColours) -> alt.Chart:
    df = pd.DataFrame(rows)
    tiers = colours.domain(df["tier"])
    chart: alt.Chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("check:N", title=None, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("tier:N", sort=tiers),
            y=alt.Y("rate:Q", title="answers failing the check", axis=alt.Axis(format="%")),
            color=_tier_colour(colours, tiers),
            tooltip=[
                "tier:N",
                "check:N",
                alt.Tooltip("rate:Q", format=".2%"),
                alt.Tooltip("failed:Q"),
                alt.Tooltip("answered:Q"),
            ],
        )
    )
    return chart
