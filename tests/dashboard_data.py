"""Ledgers for the dashboard's tests: rows seeded directly with known values (so a figure can be
checked against plain SQL), and a realistic one a real gateway writes (for the screenshots)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from gateway.ledger import create_schema, make_engine
from gateway.ledger.models import LedgerEntry
from gateway.ledger.rollups import rebuild
from gateway.quality.models import Feedback, Judgement, PolicySnapshot

REQUESTS = LedgerEntry.__table__  # type: ignore[attr-defined]
JUDGEMENTS = Judgement.__table__  # type: ignore[attr-defined]
FEEDBACK = Feedback.__table__  # type: ignore[attr-defined]
SNAPSHOTS = PolicySnapshot.__table__  # type: ignore[attr-defined]

PRICES = {"local": (0.0, 0.0), "mid": (0.15, 0.6), "frontier": (2.5, 10.0)}
# (verdict, adequacy) as the judge's two games combine: win+tie, tie+tie, win+loss, tie+loss, loss+loss.
OUTCOMES = [("win", 1.0), ("tie", 1.0), ("tie", 0.5), ("loss", 0.5), ("loss", 0.0)]
SNAPSHOT_POLICY = """\
version: 1
tiers:
  - {name: local, deployments: [{name: snap-local, model: fake/echo, price: {input_per_1m: 0, output_per_1m: 0}}]}
  - {name: mid, deployments: [{name: snap-mid, model: fake/echo, price: {input_per_1m: 0.15, output_per_1m: 0.6}}]}
  - {name: frontier, deployments: [{name: snap-frontier, model: gpt-4o}]}
routes:
  - {name: auto, auto: true, tier: mid}
quality: {sample_rate: 0.25, judge: snap-frontier}
escalate: {on: [invalid_json]}  # YAML 1.1 reads `on` as True: the gateway's loader does not
"""


def engine_for(db: Path | str) -> Engine:
    url = str(db) if "://" in str(db) else f"sqlite:///{db}"
    engine = make_engine(url)
    create_schema(engine)
    return engine


def traffic_rows(n: int, now: datetime) -> list[dict[str, Any]]:
    """Client requests over 48 hours: three tiers, two routes, two keys, some refused or failed."""
    rows = []
    for i in range(n):
        tier = ("local", "mid", "frontier")[i % 3]
        p, c = 100 + i, 20 + i % 50
        price = PRICES[tier]
        status, error = 200, None
        if i % 20 == 0:
            status, error = 502, "upstream_error"
        elif i % 25 == 7:
            status, error = 401, "invalid_api_key"
        elif i % 25 == 13:
            status, error = 429, "budget_exceeded"
        answered = status < 400
        read = p // 2 if answered and i % 4 == 1 else 0
        rows.append(
            {
                "request_id": uuid.uuid4().hex,
                "created_at": now - timedelta(hours=(i % 48), minutes=i % 7),  # about half in the last 24 h
                "api_key_id": None if status == 401 else ("key_a", "key_b", None)[i % 3],
                "session_id": f"conv-{i % 4}" if i % 2 else None,
                "route": None if status == 401 else ("auto", "cheap")[i % 2],
                "requested_model": "auto",
                "tier": None if status == 401 else tier,
                "deployment": f"d-{tier}" if answered else None,
                "upstream_model": f"fake/{tier}" if answered else None,
                "router_scores": json.dumps({"local": 0.4, "mid": 0.6, "frontier": 0.8}) if i % 2 == 0 else None,
                "prompt_tokens": p if answered else 0,
                "completion_tokens": c if answered else 0,
                "cache_read_tokens": read,
                # cache reads at a tenth of the input rate, as Anthropic's and OpenAI's newer models
                "cost_usd": ((p - read * 0.9) * price[0] + c * price[1]) / 1e6 if answered else 0.0,
                "uncached_cost_usd": (p * price[0] + c * price[1]) / 1e6 if answered else 0.0,
                "frontier_cost_usd": ((p - read * 0.9) * 2.5 + c * 10) / 1e6 if answered else 0.0,
                "ttft_ms": 50.0 + i if answered else None,
                "latency_ms": 100.0 + i,
                "status_code": status,
                "error_type": error,
                "fallbacks": json.dumps(["x"]) if i % 10 == 0 else None,
            }
        )
    return rows


def quality_rows(clients: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Judged samples, feedback, failed checks, escalations and the quality calls, for answered
    client requests. Sample rates differ (0.5 and 0.25), so weighting matters."""
    judgements, feedback, own = [], [], []
    answered = [r for r in clients if r["status_code"] < 400]
    for i, r in enumerate(answered):
        if i % 3 == 0:
            r["checks"] = json.dumps(["invalid_json"] if r["tier"] != "frontier" else ["truncated"])
        elif i % 7 == 1:
            r["checks"] = json.dumps(["empty", "refusal"])
        if r["tier"] == "mid" and i % 4 == 1:
            r["steps"] = json.dumps([{"tier": "local", "reasons": ["invalid_json"]}, {"tier": "mid", "reasons": []}])
        elif r["tier"] == "frontier" and i % 5 == 2:
            r["steps"] = json.dumps(
                [
                    {"tier": "local", "reasons": ["invalid_json", "truncated"]},
                    {"tier": "mid", "reasons": ["refusal"]},
                    {"tier": "frontier", "reasons": []},
                ]
            )
        if i % 2 == 0:
            served = str(r["tier"])
            cheaper = served if served != "frontier" else "mid"
            verdict, adequacy = OUTCOMES[i % len(OUTCOMES)]
            if i % 22 == 0:
                verdict, adequacy = "unparseable", None
            judgements.append(
                {
                    "request_id": r["request_id"],
                    "created_at": r["created_at"],
                    "served_tier": served,
                    "shadow_tier": "frontier" if served != "frontier" else "mid",
                    "cheaper_tier": cheaper,
                    "reference_tier": "frontier",
                    "verdict": verdict,
                    "adequacy": adequacy,
                    "judge": "the-judge",
                    "sample_rate": 0.5 if i % 4 == 0 else 0.25,
                    "predicted": json.dumps(
                        {"local": 0.05 + (i % 10) / 10, "mid": 0.55 + (i % 4) / 10, "frontier": 1.0}
                    )
                    if i % 6
                    else None,
                    "router_tier": served,
                }
            )
            for purpose, cost in (("shadow", 0.0004), ("judge", 0.0001), ("judge", 0.0001)):
                own.append(
                    {
                        "request_id": uuid.uuid4().hex,
                        "created_at": r["created_at"],
                        "requested_model": "tier/frontier" if purpose == "shadow" else "the-judge",
                        "tier": "frontier" if purpose == "shadow" else None,
                        "cost_usd": cost,
                        "purpose": purpose,
                        "parent_request_id": r["request_id"],
                    }
                )
        if i % 5 == 0:
            feedback.append({"request_id": r["request_id"], "source": "master", "score": (1.0, 0.0, 1.0, 0.75)[i % 4]})
    return {"judgements": judgements, "feedback": feedback, "own": own}


def _full(model: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every column of every row (the model's defaults where a row leaves one out): one insert."""
    return [model(**r).model_dump(exclude={"id"}) for r in rows]


def build(n: int = 300, quality: bool = False, now: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rows for each table: ``n`` client requests, and with ``quality`` their quality signals."""
    clients = traffic_rows(n, now or datetime.now(UTC))
    extra = quality_rows(clients) if quality else {"judgements": [], "feedback": [], "own": []}
    return {"requests": clients + extra["own"], "judgements": extra["judgements"], "feedback": extra["feedback"]}


def write(db: Path | str, tables: dict[str, list[dict[str, Any]]], snapshot: str | None = None) -> None:
    """Into a fresh ledger (a SQLite file, or a database URL), with the policy snapshot if given."""
    engine = engine_for(db)
    with engine.begin() as conn:
        for table, model in ((REQUESTS, LedgerEntry), (JUDGEMENTS, Judgement), (FEEDBACK, Feedback)):
            if tables.get(table.name):
                conn.execute(insert(table), _full(model, tables[table.name]))
        if snapshot is not None:
            digest = hashlib.sha256(snapshot.encode()).hexdigest()
            row = {"path": "/etc/tierwise/running.yaml", "sha256": digest, "content": snapshot}
            conn.execute(insert(SNAPSHOTS), [row])
        rebuild(conn)  # rows written around the gateway's writer: its rollups are recounted
    engine.dispose()


def seed(db: Path | str, n: int = 300, quality: bool = False, snapshot: str | None = None) -> None:
    write(db, build(n, quality), snapshot)


# -- a ledger a real gateway writes ------------------------------------------------------------
MASTER = "sk-master-dashboard-0123456789"
PROMPTS = [
    "Say hello to the team",
    "Name a colour",
    "What is two plus two",
    "Write a short greeting",
    "Thank you!",
    "medium: summarise this paragraph about tides",
    "medium: translate this recipe into French",
    "medium: explain recursion with an example",
    "hard: prove the theorem about primes",
    "hard: design a distributed consensus protocol",
    "hard: find the bug in this lock-free queue",
]
# Route mix of a typical app: mostly the router, some pinned cheap or best, a few pinned to a tier.
MODELS = ["auto", "auto", "auto", "cheap", "cheap", "tier/mid", "best", "best"]
COUNT_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "count",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        },
    }
]


def gateway_policy(fake: str, sample_rate: float = 0.4) -> str:
    """Three tiers whose answers a fake judge can tell apart (``skill-<n>``), judged samples on."""

    def dep(name: str, model: str, price: str) -> str:
        return f'{{name: {name}, model: openai/{model}, api_base: "{fake}/v1", max_retries: 0, price: {price}}}'

    return f"""
    version: 1
    tiers:
      - name: local
        deployments: [{dep("local-smol", "skill-0", "{input_per_1m: 0, output_per_1m: 0}")}]
      - name: mid
        deployments: [{dep("mid-mini", "skill-1", "{input_per_1m: 0.15, output_per_1m: 0.6}")}]
      - name: frontier
        deployments: [{dep("frontier-big", "skill-2", "{input_per_1m: 2.5, output_per_1m: 10}")}]
    routes:
      - {{name: auto, auto: true, tier: mid}}
      - {{name: cheap, tier: local}}
      - {{name: best, tier: frontier}}
    router: {{artifact: default, target: {{quality: 0.9}}}}
    escalate: {{on: [tool_args_invalid], max_steps: 2}}
    quality:
      sample_rate: {sample_rate}
      max_daily_usd: 5
      queue_size: 1000
      judge: {dep("the-judge", "judge", "{input_per_1m: 0.1, output_per_1m: 0.1}")}
    """


def drive(base_url: str, requests: int = 160) -> dict[str, int]:
    """Traffic through a running gateway (master key ``MASTER``): two keys, a route mix, tool calls
    whose arguments a tier below the prompt's difficulty gets wrong (escalated), feedback on a quarter of the answers, and refusals (a bad key,
    an unknown model, an unknown field, a key over its rate limit). Returns status code counts."""
    admin = {"authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        app = http.post("/admin/keys", json={"owner": "web-app"}, headers=admin).json()["key"]
        batch = http.post("/admin/keys", json={"owner": "batch-jobs", "rpm_limit": 10}, headers=admin).json()["key"]
        keys = [app, app, app, batch, app, app, app, app]  # the batch job sends an eighth, too fast
        statuses: dict[str, int] = {}
        for i in range(requests):
            key, model, text = keys[i % len(keys)], MODELS[i % len(MODELS)], f"{PROMPTS[i % len(PROMPTS)]} #{i}"
            body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
            if i % 9 == 4:
                body["tools"] = COUNT_TOOL
            if i % 37 == 5:
                key = "sk-tw-not-a-key"
            elif i % 41 == 6:
                body["model"] = "no-such-model"
            elif i % 43 == 7:
                body["colour"] = "red"
            r = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
            if r.status_code == 200 and i % 4 == 1:
                answer = r.json()["choices"][0]["message"].get("content") or ""
                thumbs = "up" if ":: adequate" in answer else "down"
                rid = r.headers["x-tierwise-request-id"]
                http.post(
                    "/v1/feedback",
                    json={"request_id": rid, "thumbs": thumbs},
                    headers={"authorization": f"Bearer {key}"},
                )
    return statuses


def settle(db: Path, timeout_s: float = 60, quiet_s: float = 1.5) -> int:
    """Wait until the gateway's judged samples stop coming; returns how many there are."""
    deadline, last, since = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        con = sqlite3.connect(db)
        try:
            n = int(con.execute("SELECT count(*) FROM judgements").fetchone()[0])
        except sqlite3.OperationalError:
            n = 0
        finally:
            con.close()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            break
        time.sleep(0.2)
    return last


def spread_over(db: Path, span: timedelta) -> None:
    """The demo ran in seconds; spread its requests evenly over the last ``span`` (in their order),
    and everything tied to one (quality calls, judgement, feedback) to its time, so the time
    charts have a shape. Only timestamps change."""
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    now = datetime.now(UTC).replace(tzinfo=None)
    con = sqlite3.connect(db)
    try:
        ids = [r[0] for r in con.execute("SELECT request_id FROM requests WHERE purpose = 'client' ORDER BY id")]
        step = span / max(len(ids), 1)
        with con:
            for i, rid in enumerate(ids):
                at = (now - span + step * (i + 1)).strftime(fmt)
                con.execute(
                    "UPDATE requests SET created_at = ? WHERE request_id = ? OR parent_request_id = ?", (at, rid, rid)
                )
                con.execute("UPDATE judgements SET created_at = ? WHERE request_id = ?", (at, rid))
                con.execute("UPDATE feedback SET created_at = ?, updated_at = ? WHERE request_id = ?", (at, at, rid))
    finally:
        con.close()
    engine = engine_for(db)
    with engine.begin() as conn:  # times changed under the rollups: recounted
        rebuild(conn)
    engine.dispose()
