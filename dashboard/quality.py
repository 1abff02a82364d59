"""The quality section: what routing to cheaper tiers cost in quality, measured on the gateway's
own traffic, beside what it saved. Savings are claimed only next to measured quality."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from dashboard import charts
from dashboard import quality_queries as qq
from dashboard.policy_view import RunningPolicy
from dashboard.queries import Filters, Summary
from dashboard.tiers import TierColours
from gateway.quality.checks import CHECKS
from gateway.quality.stats import MIN_SAMPLES, Estimate

__all__ = ["QUALITY_TABLES", "headline_metric", "quality_section"]

QUALITY_TABLES = frozenset({"judgements", "feedback"})
_SAMPLING = (
    "Turn sampling on in the policy: `quality: {sample_rate: 0.05, judge: <a deployment>}`. The gateway then "
    "has another tier answer that share of requests too, after the client has its answer, and the judge "
    "compares the two answers (both orders); those verdicts fill this section."
)


def _interval(e: Estimate) -> str:
    return f"{e.low:.1%}–{e.high:.1%}"


def _metric(col: Any, label: str, value: str, note: str | None, helptext: str | None = None) -> None:
    """A figure with a note under it (the delta's place, without colour or arrow)."""
    col.metric(label, value, note, delta_color="off", delta_arrow="off", help=helptext)


def headline_metric(col: Any, est: Estimate | None) -> None:
    """The top row's measured-quality figure, beside the savings it qualifies."""
    helptext = (
        "Quality of the served traffic relative to sending everything to the reference (frontier) tier, "
        f"from judged samples weighted by 1/sample_rate; ± half the 95% Wilson interval. Claimed from "
        f"{MIN_SAMPLES} judged samples on; see Quality below."
    )
    if est is None or not est.enough:
        n = est.n if est else 0
        _metric(col, "Measured quality", "not yet", f"{n} of {MIN_SAMPLES} samples", helptext)
    else:
        _metric(col, "Measured quality", f"{est.mean:.1%}", f"±{est.plus_minus * 100:.1f} points", helptext)


def _headline(j: qq.Judged, s: Summary, running: RunningPolicy | None) -> None:
    est = j.quality.estimate()
    if est is not None and est.enough:
        measured = f"a measured {est.mean:.1%} (±{est.plus_minus * 100:.1f}) of frontier quality"
        claim = (
            f"Saved {s.savings_pct:.0%} against all-frontier at {measured}" if s.savings_pct is not None else measured
        )
        st.success(f"**{claim}** — {est.n:,} judged samples, 95% Wilson interval {_interval(est)}.")
        return
    policy = running.policy if running else None
    sampling = policy is not None and policy.quality.sample_rate > 0
    if policy is None:
        in_force = "No policy is recorded in this database, so whether sampling is on is unknown."
    elif sampling:
        q = policy.quality
        in_force = f"The policy in force samples {q.sample_rate:.1%} of requests (judge `{q.judge_name}`)."
    else:
        in_force = "The policy in force has sampling off."
    if j.samples == 0:
        st.info(
            "No judged samples in this selection, so no quality figure and no savings claim. "
            + (
                f"{in_force} Verdicts arrive shortly after the requests they judge."
                if sampling
                else f"{_SAMPLING} {in_force}"
            )
        )
        return
    n = est.n if est else 0
    st.info(
        f"{n} judged samples with a verdict in this selection: a quality figure (and the savings claim beside "
        f"it) needs {MIN_SAMPLES}. Widen the window or raise `quality.sample_rate`. {in_force}"
    )


def _tier_table(
    j: qq.Judged,
    fb: list[dict[str, Any]],
    checks: qq.CheckFailures,
    esc: qq.Escalations,
    colours: TierColours,
) -> None:
    feedback = {str(r["tier"]): r for r in fb if r["tier"] is not None}
    tiers = colours.domain(set(j.adequacy) | set(feedback) | set(checks.answered))
    table = []
    for tier in tiers:
        est = j.adequacy[tier].estimate() if tier in j.adequacy else None
        v = j.verdicts.get(tier)
        f = feedback.get(tier)
        thumbs = (int(f["up"]) + int(f["down"])) if f else 0
        answered = checks.answered.get(tier, 0)
        escalated = sum(n for (t, _), n in esc.escalated.items() if t == tier)
        table.append(
            {
                "tier": tier,
                "judged": est.n if est else 0,
                "adequate": est.mean if est else None,
                "95% interval": _interval(est) if est else None,
                "win / tie / loss": f"{v['win']} / {v['tie']} / {v['loss']}" if v else None,
                "feedback": int(f["n"]) if f else 0,
                "mean score": float(f["mean"]) if f else None,
                "thumbs up": int(f["up"]) / thumbs if f and thumbs else None,
                "answers": answered,
                "failed a check": checks.any_failed.get(tier, 0) / answered if answered else None,
                "escalated": escalated / esc.tried[tier] if esc.tried.get(tier) else None,
            }
        )
    if not table:
        return
    pct = st.column_config.NumberColumn(format="percent")
    st.dataframe(
        pd.DataFrame(table),
        width="stretch",
        hide_index=True,
        column_config={
            "judged": st.column_config.NumberColumn(
                help="samples with a verdict in which this tier's answer was judged against the reference tier's"
            ),
            "adequate": st.column_config.NumberColumn(
                format="percent", help="answers not beaten by the reference tier's (wins + ties), weighted"
            ),
            "mean score": st.column_config.NumberColumn(format="%.2f", help="clients' feedback, 0..1"),
            "thumbs up": pct,
            "failed a check": pct,
            "escalated": pct,
        },
    )


def _adequacy_rows(j: qq.Judged) -> list[dict[str, Any]]:
    out = []
    for tier, sums in j.adequacy.items():
        est = sums.estimate()
        if est is not None:
            row = {"tier": tier, "adequacy": est.mean, "low": est.low, "high": est.high, "n": est.n}
            out.append({**row, "label": f"n={est.n}"})
    return out


def _over_time_rows(series: dict[int, qq.Judged]) -> list[dict[str, Any]]:
    out = []
    for bucket, j in series.items():
        named = [(tier, s.estimate()) for tier, s in j.adequacy.items()]
        for name, est in [*named, (charts.SERVED, j.quality.estimate())]:
            if est is not None:
                out.append({"bucket": bucket, "series": name, "value": est.mean, "n": est.n})
    return out


def _calibration_rows(cal: list[qq.Calibration], bins: int = 10) -> list[dict[str, Any]]:
    out = []
    for c in cal:
        est = c.adequacy.estimate()
        if est is not None:
            span = f"{c.bin / bins:.1f}–{(c.bin + 1) / bins:.1f}"
            row = {"bin": span, "predicted": c.predicted, "adequacy": est.mean, "low": est.low, "high": est.high}
            out.append({**row, "n": est.n})
    return out


def _checks(checks: qq.CheckFailures, colours: TierColours) -> None:
    st.subheader("Failed answer checks")
    total = sum(checks.answered.values())
    if total == 0:
        st.info("No answered requests in this selection: every answer is checked as it is served.")
        return
    if not checks.failed:
        st.caption(f"None of {total:,} answers failed a check ({', '.join(CHECKS)}).")
        return
    rows = [
        {"tier": t, "check": c, "failed": n, "answered": checks.answered[t], "rate": n / checks.answered[t]}
        for (t, c), n in checks.failed.items()
    ]
    st.altair_chart(charts.checks_chart(rows, colours), width="stretch")
    st.caption(f"Share of each tier's answers failing each check, of {total:,} answers.")


def _escalations(esc: qq.Escalations, colours: TierColours) -> None:
    st.subheader("Escalations")
    if not esc.escalated:
        st.caption(
            "No escalations in this selection. When an answer fails a check and the gateway asks the next tier "
            "up instead, the tier it moved on from and the reason show here."
        )
        return
    rows = [
        {"tier": t, "reason": why, "escalated": n, "answers at tier": esc.tried[t], "rate": n / esc.tried[t]}
        for (t, why), n in sorted(esc.escalated.items(), key=lambda kv: (colours.rank(kv[0][0]), -kv[1]))
    ]
    st.dataframe(
        pd.DataFrame(rows),
        width="stretch",
        hide_index=True,
        column_config={"rate": st.column_config.NumberColumn(format="percent")},
    )


def _cost(cost: list[dict[str, Any]], s: Summary, col: Any) -> None:
    usd = sum(float(r["cost_usd"]) for r in cost)
    calls = sum(int(r["calls"]) for r in cost)
    share = f"{usd / s.spend_usd:.1%} of spend" if s.spend_usd > 0 and usd > 0 else None
    _metric(
        col,
        "Cost of measuring quality",
        f"${usd:,.4f}",
        share,
        f"{calls:,} shadow answers and judge calls for these requests (never charged to a key)",
    )


def quality_section(
    engine: Engine,
    f: Filters,
    s: Summary,
    judged: tuple[qq.Judged, dict[int, qq.Judged]],
    costs: list[dict[str, Any]],
    colours: TierColours,
    running: RunningPolicy | None,
    bucket_s: int,
) -> None:
    """``judged``: the samples in all and per ``bucket_s``; ``costs``: the quality calls'."""
    j, series = judged
    st.header("Quality", anchor="quality")
    _headline(j, s, running)
    fb = qq.feedback_by_tier(engine, f)
    checks = qq.check_failures(engine, f)
    esc = qq.escalations(engine, f)

    est = j.quality.estimate()
    cols = st.columns(4)
    _metric(
        cols[0],
        "Judged samples",
        f"{j.samples:,}",
        f"{j.unparseable} unreadable verdicts" if j.unparseable else None,
        "requests answered a second time by another tier and compared by the judge",
    )
    cols[1].metric("Quality interval (95%)", _interval(est) if est else "–", help="Wilson, at the effective n")
    n_feedback = sum(int(r["n"]) for r in fb)
    mean = sum(float(r["mean"]) * int(r["n"]) for r in fb) / n_feedback if n_feedback else None
    _metric(cols[2], "Feedback", f"{n_feedback:,}", f"mean {mean:.2f}" if mean is not None else None)
    _cost(costs, s, cols[3])

    st.subheader("By tier")
    _tier_table(j, fb, checks, esc, colours)
    if not fb:
        st.caption(
            'No feedback in this selection. Clients send it with `POST /v1/feedback` and `{"request_id": '
            '<the answer\'s x-tierwise-request-id>, "thumbs": "up" | "down"}` (or `"score"`: 0..1).'
        )

    left, right = st.columns(2)
    with left:
        st.subheader("Judged adequacy by tier")
        rows = _adequacy_rows(j)
        reference = running.tiers[-1] if running and running.tiers else None
        if rows:
            st.altair_chart(charts.adequacy_chart(rows, colours, reference), width="stretch")
            st.caption(
                "Share of each tier's answers the judge found not worse than the reference tier's (wins + ties), "
                "with its 95% interval and n. The reference tier is adequate by definition."
            )
        else:
            st.info("No judged samples yet: each tier's adequacy against the reference tier shows here.")
    with right:
        st.subheader("Router calibration")
        cal = _calibration_rows(qq.calibration(engine, f))
        if cal:
            st.altair_chart(charts.calibration_chart(cal), width="stretch")
            st.caption(
                "The router's predicted quality for the judged tier, in bins of 0.1, against how often the judge "
                "found that tier adequate (95% interval, n above each point). On the dashed line the router is "
                "calibrated; below it, it promises more than the tier delivers."
            )
        else:
            st.info(
                "No judged samples of auto-routed requests yet: this chart fills once requests to an auto route "
                '(`model="auto"`) are sampled and judged.'
            )

    left, right = st.columns(2)
    with left:
        st.subheader("Judged quality over time")
        over = _over_time_rows(series)
        if over:
            st.altair_chart(charts.quality_over_time_chart(over, bucket_s, colours), width="stretch")
            st.caption(f"Per tier: adequacy against the reference. {charts.SERVED}: the measured quality.")
        else:
            st.info("Fills with judged samples over time.")
    with right:
        _checks(checks, colours)
    _escalations(esc, colours)
