"""The dashboard's quality section equals the truth computed from the rows themselves (weighted
by 1/sample_rate), says what fills it when it is empty, and its queries agree on PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dashboard import quality_queries as qq
from dashboard import queries as q
from gateway.ledger import make_engine
from gateway.quality.stats import MIN_SAMPLES, Sums, wilson
from tests.dashboard_data import SNAPSHOT_POLICY, build, write
from tests.test_dashboard import metrics, run_app


def test_wilson_interval_matches_published_values() -> None:
    lo, hi = wilson(0.5, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    lo, hi = wilson(0.9, 30)
    assert (round(lo, 4), round(hi, 4)) == (0.7438, 0.9654)
    assert wilson(1.0, 10)[1] == pytest.approx(1.0) and wilson(0.0, 10)[0] == pytest.approx(0.0)
    # Equal weights change nothing; unequal ones shrink the effective sample.
    even = Sums(4, 8.0, 16.0, 6.0).estimate()
    assert even is not None and even.n_eff == 4 and even.mean == 0.75
    uneven = Sums(4, 8.0, 34.0, 6.0).estimate()
    assert uneven is not None and uneven.n_eff < 2


def _client_rows(con: sqlite3.Connection, since: str) -> list[dict[str, Any]]:
    return [
        dict(r) for r in con.execute("SELECT * FROM requests WHERE purpose = 'client' AND created_at >= ?", (since,))
    ]


def test_quality_section_equals_the_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ledger.db"
    write(db, build(300, quality=True), SNAPSHOT_POLICY)
    at = run_app(f"sqlite:///{db}", monkeypatch)

    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    clients = _client_rows(con, since)
    ids = {r["request_id"] for r in clients}
    judged = [dict(j) for j in con.execute("SELECT * FROM judgements") if j["request_id"] in ids]
    assert len(judged) >= MIN_SAMPLES and len({j["sample_rate"] for j in judged}) == 2

    # Measured quality: 1 for a sample the reference served, its adequacy otherwise; weighted. A
    # verdict the judge did not make readable measured nothing, whoever served.
    scored = [
        (1 / j["sample_rate"], 1.0 if j["served_tier"] == j["reference_tier"] else j["adequacy"])
        for j in judged
        if j["adequacy"] is not None
    ]
    w = sum(x for x, _ in scored)
    quality = sum(x * v for x, v in scored) / w
    lo, hi = wilson(quality, w * w / sum(x * x for x, _ in scored))
    spend = sum(r["cost_usd"] for r in clients)
    frontier = sum(r["frontier_cost_usd"] for r in clients)
    own = con.execute(
        "SELECT sum(cost_usd) FROM requests WHERE purpose != 'client' AND parent_request_id IN "
        "(SELECT request_id FROM requests WHERE purpose = 'client' AND created_at >= ?)",
        (since,),
    ).fetchone()[0]
    (headline,) = [s.value for s in at.success]
    # net of what measuring cost: the shadow answers and judge calls are part of the bill
    assert headline == (
        f"**Saved {(frontier - spend - own) / frontier:.0%} against all-frontier at a measured {quality:.1%} "
        f"(±{(hi - lo) / 2 * 100:.1f}) of frontier quality** — {len(scored):,} judged samples, "
        f"95% Wilson interval {lo:.1%}–{hi:.1%}."
    )
    m = metrics(at)
    assert m["Measured quality"] == f"{quality:.1%}"
    assert m["Judged samples"] == f"{len(judged):,}"
    unreadable = sum(j["verdict"] == "unparseable" for j in judged)
    assert unreadable and next(x for x in at.metric if x.label == "Judged samples").delta == (
        f"{unreadable} unreadable verdicts"
    )
    assert m["Cost of measuring quality"] == f"${own:,.4f}"

    table = next(d.value for d in at.dataframe if "adequate" in d.value.columns).set_index("tier")
    assert list(table.index) == ["local", "mid", "frontier"]
    for tier in ("local", "mid"):
        mine = [j for j in judged if j["cheaper_tier"] == tier]
        valid = [(1 / j["sample_rate"], j["adequacy"]) for j in mine if j["adequacy"] is not None]
        verdicts = Counter(j["verdict"] for j in mine)
        assert table.loc[tier, "judged"] == len(valid)
        assert table.loc[tier, "adequate"] == pytest.approx(sum(x * a for x, a in valid) / sum(x for x, _ in valid))
        assert table.loc[tier, "win / tie / loss"] == f"{verdicts['win']} / {verdicts['tie']} / {verdicts['loss']}"
    for tier in ("local", "mid", "frontier"):
        answered = [r for r in clients if r["tier"] == tier and r["status_code"] < 400]
        failing = [r for r in answered if json.loads(r["checks"] or "[]")]
        assert table.loc[tier, "answers"] == len(answered)
        assert table.loc[tier, "failed a check"] == pytest.approx(len(failing) / len(answered))
        scores = [
            f["score"]
            for f in con.execute("SELECT * FROM feedback")
            if f["request_id"] in {r["request_id"] for r in answered}
        ]
        assert table.loc[tier, "feedback"] == len(scores)
        assert table.loc[tier, "mean score"] == pytest.approx(sum(scores) / len(scores))
        thumbs = [s for s in scores if s in (0.0, 1.0)]
        assert table.loc[tier, "thumbs up"] == pytest.approx(thumbs.count(1.0) / len(thumbs))

    # Escalations: every step tried its tier; every step but the last moved on, for its reason.
    tried: Counter[str] = Counter()
    moved: Counter[tuple[str, str]] = Counter()
    for r in clients:
        if r["status_code"] >= 400:
            continue
        steps = json.loads(r["steps"]) if r["steps"] else [{"tier": r["tier"]}]
        tried.update(s["tier"] for s in steps)
        moved.update((s["tier"], why) for s in steps[:-1] for why in s["reasons"])
    escalations = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert {(t, why): n for t, why, n in escalations[["tier", "reason", "escalated"]].itertuples(index=False)} == moved
    assert all(row.rate == pytest.approx(row.escalated / tried[row.tier]) for row in escalations.itertuples())
    assert table.loc["local", "escalated"] == pytest.approx(
        sum(n for (t, _), n in moved.items() if t == "local") / tried["local"]
    )

    # Calibration: the router's prediction for the judged tier, in tenths, against adequacy.
    bins: dict[int, list[tuple[float, float]]] = {}
    for j in judged:
        if j["predicted"] and j["adequacy"] is not None:
            p = json.loads(j["predicted"])[j["cheaper_tier"]]
            bins.setdefault(min(int(p * 10), 9), []).append((1 / j["sample_rate"], j["adequacy"]))
    engine = make_engine(f"sqlite:///{db}")
    found = qq.calibration(engine, q.Filters(since=datetime.now(UTC) - timedelta(days=1)))
    assert [c.bin for c in found] == sorted(bins)
    for c in found:
        est = c.adequacy.estimate()
        assert est is not None and est.n == len(bins[c.bin])
        assert est.mean == pytest.approx(sum(x * a for x, a in bins[c.bin]) / sum(x for x, _ in bins[c.bin]))


def test_quality_empty_states_say_what_fills_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Traffic, but nothing judged: no quality figure, and no savings claim beside it.
    db = tmp_path / "unjudged.db"
    write(db, build(120), SNAPSHOT_POLICY)
    at = run_app(f"sqlite:///{db}", monkeypatch)
    assert not at.success
    assert metrics(at)["Measured quality"] == "not yet"
    assert any("The policy in force samples 25.0% of requests (judge `snap-frontier`)" in i.value for i in at.info)
    assert any("POST /v1/feedback" in c.value for c in at.caption)
    assert any("No escalations" in c.value for c in at.caption)
    assert any('model="auto"' in i.value for i in at.info)  # the calibration chart's

    # A few judged samples: shown per tier, but no headline until there are enough.
    db = tmp_path / "few.db"
    write(db, build(40, quality=True))
    at = run_app(f"sqlite:///{db}", monkeypatch)
    assert not at.success
    (few,) = [i.value for i in at.info if "judged samples with a verdict" in i.value]
    assert f"needs {MIN_SAMPLES}" in few and "sampling is on is unknown" in few  # no policy recorded here
    assert next(x for x in at.metric if x.label == "Measured quality").value == "not yet"


def _comparable(engine: Any) -> dict[str, Any]:
    f = q.Filters(since=datetime.now(UTC) - timedelta(days=1))
    j, series = qq.judged_over_time(engine, f, 3600)
    checks, esc = qq.check_failures(engine, f), qq.escalations(engine, f)
    return {
        "summary": q.summary(engine, f),
        "spend": sorted(
            (r["bucket"], r["tier"], r["requests"], r["spend_usd"]) for r in q.spend_over_time(engine, f, 3600)
        ),
        "latency": sorted((r["tier"], r["latency_p50_ms"], r["ttft_p95_ms"]) for r in q.latency_percentiles(engine, f)),
        "refusals": sorted(
            (r["status_code"], r["error_type"], r["requests"], r["keys"]) for r in q.refusals(engine, f)
        ),
        "judged": (j.adequacy, j.quality, j.samples, j.unparseable),
        "over time": {b: (x.quality, x.samples) for b, x in series.items()},
        "calibration": [(c.bin, c.predicted, c.adequacy) for c in qq.calibration(engine, f)],
        "feedback": sorted(
            (r["tier"], r["n"], float(r["mean"]), r["up"], r["down"]) for r in qq.feedback_by_tier(engine, f)
        ),
        "checks": (checks.answered, checks.failed, checks.any_failed),
        "escalations": (esc.tried, esc.escalated),
        "cost": sorted((r["purpose"], r["calls"], r["cost_usd"]) for r in qq.quality_cost(engine, f)),
        "tiers": q.tier_prices(engine),
    }


@pytest.mark.postgres
def test_queries_agree_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    tables = build(300, quality=True)
    write(tmp_path / "ledger.db", tables)
    write(pg_url, tables)
    sqlite_engine, pg_engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}"), make_engine(pg_url)
    try:
        lite, pg = _comparable(sqlite_engine), _comparable(pg_engine)
    finally:
        pg_engine.dispose()
    assert lite["judged"][2] and lite["calibration"] and lite["escalations"][1] and lite["checks"][1]  # not vacuous
    for key in lite:
        assert _norm(pg[key]) == _norm(lite[key]), key


def _norm(value: Any) -> Any:
    """Comparable across databases: sums of floats may differ in their last bits."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _norm(dataclasses.astuple(value))
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return value
