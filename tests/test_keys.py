"""Keys, budgets and rate limits: single node, and two replicas sharing PostgreSQL and Redis."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import text

from gateway.demo.server_thread import ServerThread
from gateway.ledger import make_engine
from gateway.providers.fake_upstream import create_fake_app
from tests.conftest import REPO, GatewayFactory, MinuteStartClock, fake_stats, three_tier_policy
from tests.replicas import Replicas
from tests.tcp_proxy import TcpProxy

MASTER = "sk-master-test-0123456789"


@pytest.fixture
def keyed(start_gateway: GatewayFactory, fake_upstream: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TIERWISE_MASTER_KEY", MASTER)
    gw = start_gateway(three_tier_policy(fake_upstream))
    return gw


def admin(gw_url: str, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, gw_url + "/admin" + path, headers={"authorization": f"Bearer {MASTER}"}, **kw)  # type: ignore[arg-type]


def chat(gw_v1: str, key: str, model: str = "cheap", **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello budget"}], **extra}
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gw_v1 + "/chat/completions", json=body, headers=headers, timeout=30)


def test_admin_api_needs_master_key(keyed) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(keyed.url + "/admin/keys", json={"owner": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(keyed.url + "/admin/keys", json={"owner": "x"}, headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = admin(keyed.url, "POST", "/keys", json={"owner": "x", "colour": "blue"})
    assert r.status_code == 400 and "colour" in r.json()["error"]["message"]


def test_the_spend_of_a_key_that_does_not_exist_is_a_404(keyed) -> None:  # type: ignore[no-untyped-def]
    r = admin(keyed.url, "GET", "/keys/key_0000000000000000/spend")
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
    made = admin(keyed.url, "POST", "/keys", json={}).json()
    spend = admin(keyed.url, "GET", f"/keys/{made['id']}/spend").json()
    assert (spend["spent_today_usd"], spend["spent_month_usd"]) == (0, 0)


def test_key_lifecycle_and_hash_only_storage(keyed, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    created = admin(keyed.url, "POST", "/keys", json={"owner": "alice", "team": "search", "metadata": {"app": "bot"}})
    assert created.status_code == 201
    info = created.json()
    key = info["key"]
    assert key.startswith("sk-tw-") and len(key) > 40 and "key_hash" not in info
    listed = admin(keyed.url, "GET", "/keys").json()["data"]
    assert [k["id"] for k in listed] == [info["id"]]
    assert key not in json.dumps(listed) and listed[0]["key_hint"].endswith(key[-4:])

    ok = openai.OpenAI(base_url=keyed.v1, api_key=key, max_retries=0).chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "user", "content": "x"}]
    )
    row = keyed.rows("request_id = ?", (ok.headers["x-tierwise-request-id"],))[0]
    assert row["api_key_id"] == info["id"]

    bad = chat(keyed.v1, key + "x")
    assert bad.status_code == 401 and key not in bad.text
    assert chat(keyed.v1, "").status_code == 401

    assert admin(keyed.url, "DELETE", f"/keys/{info['id']}").json()["revoked"] is True
    r = chat(keyed.v1, key)
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid or revoked API key"

    # the key is nowhere: not in the database file, the ledger or the logs (read once the revoked
    # key's refusal, the last request, is written: one a client address a minute, so any 401 row)
    keyed.rows("status_code = 401")
    raw = b"".join(p.read_bytes() for p in keyed.db_path.parent.glob("ledger.db*"))
    assert key.encode() not in raw
    assert all(key not in rec.getMessage() for rec in caplog.records)


def test_route_and_tier_permissions(keyed) -> None:  # type: ignore[no-untyped-def]
    key = admin(keyed.url, "POST", "/keys", json={"allowed_routes": ["cheap"], "allowed_tiers": ["local"]}).json()[
        "key"
    ]
    assert chat(keyed.v1, key, "cheap").status_code == 200
    r = chat(keyed.v1, key, "tier/frontier")
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    # /v1/models lists what the key may ask for, not every model of the policy
    listed = httpx.get(keyed.v1 + "/models", headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert [m["id"] for m in listed] == ["cheap"]
    wider = admin(keyed.url, "POST", "/keys", json={"allowed_routes": ["cheap", "tier/mid", "frontier-a"]}).json()
    listed = httpx.get(keyed.v1 + "/models", headers={"authorization": f"Bearer {wider['key']}"}).json()["data"]
    assert [m["id"] for m in listed] == ["cheap", "tier/mid", "mid-a", "frontier-a"]
    everything = httpx.get(keyed.v1 + "/models", headers={"authorization": f"Bearer {MASTER}"}).json()["data"]
    assert len(everything) == 8  # 2 routes, 3 tiers, 3 deployments


def test_rate_limit_429_with_retry_after(
    start_gateway: GatewayFactory, fake_upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_MASTER_KEY", MASTER)
    # fixed one-minute windows: a gateway whose minute has just begun cannot straddle a boundary here
    keyed = start_gateway(three_tier_policy(fake_upstream), clock=MinuteStartClock())
    key = admin(keyed.url, "POST", "/keys", json={"rpm_limit": 3}).json()["key"]
    codes = [chat(keyed.v1, key).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = chat(keyed.v1, key)
    assert r.json()["error"]["code"] == "rate_limit_exceeded" and 1 <= int(r.headers["retry-after"]) <= 60


def test_budget_exhausted_is_429_insufficient_quota_streaming_included(keyed) -> None:  # type: ignore[no-untyped-def]
    # frontier: $2.5 / $10 per 1M tokens; a call with max_tokens=20 reserves ~$0.00045 (its whole body at
    # 2 characters a token, plus 20 output tokens) and costs ~$0.00005
    budget = 0.0012
    info = admin(keyed.url, "POST", "/keys", json={"budget_daily_usd": budget}).json()
    key = info["key"]
    served, refused = 0, 0
    for i in range(40):
        stream = i % 2 == 1
        body = {
            "model": "tier/frontier",
            "max_tokens": 20,
            "stream": stream,
            "messages": [{"role": "user", "content": "one two three four"}],
        }
        with httpx.stream(
            "POST", keyed.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as r:
            r.read()
            if r.status_code == 200:
                served += 1
            else:
                assert r.status_code == 429
                err = json.loads(r.text)["error"]
                assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
                refused += 1
    assert served > 0 and refused > 0
    rows = keyed.rows("api_key_id = ? AND status_code = 200", (info["id"],), wait_for=served)
    assert len(rows) == served
    assert {r["stream"] for r in rows} == {0, 1}  # streamed calls spent budget too
    ledger_spend = sum(r["cost_usd"] for r in rows)
    spent = admin(keyed.url, "GET", f"/keys/{info['id']}/spend").json()
    assert spent["spent_today_usd"] == pytest.approx(ledger_spend, abs=2e-6 * served)  # micro-dollar rounding
    assert ledger_spend <= budget


def test_open_mode_without_keys(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream))
    assert chat(gw.v1, "anything").status_code == 200  # loopback client, no keys: open


# -- two replicas on PostgreSQL + Redis ------------------------------------------------------


@pytest.fixture
def own_upstream() -> Iterator[str]:
    server = ServerThread(create_fake_app())
    server.start()
    yield server.url
    server.stop()


def _pg_rows(url: str, sql: str, **params: object) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_budget_holds_under_concurrency_across_two_replicas(
    tmp_path: Path, own_upstream: str, pg_url: str, redis_url: str
) -> None:
    reps = Replicas(tmp_path, three_tier_policy(own_upstream), pg_url, redis_url, MASTER)
    try:
        # worst case per call: ~ (prompt ~30 tok x $2.5 + 20 tok x $10) / 1M = ~$0.000275; budget ~3 calls
        budget = 0.0009
        info = admin(reps.urls[0], "POST", "/keys", json={"budget_daily_usd": budget}).json()
        key = info["key"]
        body = {
            "model": "tier/frontier",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "spend some of my budget please"}],
        }

        def fire(i: int) -> int:
            url = reps.urls[i % 2] + "/v1/chat/completions"
            return httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(fire, range(50)))
        served = codes.count(200)
        assert served >= 1 and set(codes) <= {200, 429}
        deadline = time.monotonic() + 10
        while True:  # both replicas' ledgers flush in batches
            rows = _pg_rows(
                pg_url,
                "select count(*), coalesce(sum(cost_usd), 0), max(cost_usd) from requests"
                " where api_key_id = :k and status_code = 200",
                k=info["id"],
            )
            n, total, one = rows[0]
            if n >= served or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert n == served == fake_stats(own_upstream)["served"]["echo"]  # ledger == the upstream's own count
        assert float(total) <= budget + float(one)  # overspend at most one request's cost
    finally:
        reps.stop()


def test_rate_limit_across_two_replicas(tmp_path: Path, own_upstream: str, pg_url: str, redis_url: str) -> None:
    reps = Replicas(tmp_path, three_tier_policy(own_upstream), pg_url, redis_url, MASTER)
    try:
        for _ in range(2):  # the replicas use the wall clock: a run that straddles a minute boundary is redone
            key = admin(reps.urls[0], "POST", "/keys", json={"rpm_limit": 10}).json()["key"]
            minute = int(time.time() // 60)
            codes = [chat(reps.urls[i % 2] + "/v1", key).status_code for i in range(24)]
            if int(time.time() // 60) == minute:
                break
        # exactly the limit within one fixed minute window, shared by both replicas
        assert codes.count(200) == 10 and codes.count(429) == 14
    finally:
        reps.stop()


def test_answers_carry_openais_rate_limit_headers_exact_across_replicas(
    tmp_path: Path, own_upstream: str, pg_url: str, redis_url: str
) -> None:
    """OpenAI's x-ratelimit-* headers, as its SDK exposes them, counting both replicas' requests;
    tokens count what each request holds (its worst case) until its answer settles it."""
    reps = Replicas(tmp_path, three_tier_policy(own_upstream), pg_url, redis_url, MASTER)
    try:
        for _ in range(2):  # the replicas use the wall clock: a run that straddles a minute boundary is redone
            limits = {"rpm_limit": 3, "tpm_limit": 100_000, "budget_daily_usd": 5.0}
            key = admin(reps.urls[0], "POST", "/keys", json=limits).json()["key"]
            minute = int(time.time() // 60)
            seen = []
            for i in range(4):
                client = openai.OpenAI(base_url=reps.urls[i % 2] + "/v1", api_key=key, max_retries=0)
                try:
                    raw = client.chat.completions.with_raw_response.create(  # a priced tier: spend adds up
                        model="tier/frontier", messages=[{"role": "user", "content": "hi"}], max_tokens=16
                    )
                    seen.append(raw.headers)
                except openai.RateLimitError as err:
                    seen.append(err.response.headers)
            if int(time.time() // 60) == minute:
                break
        assert [h["x-ratelimit-limit-requests"] for h in seen] == ["3"] * 4
        assert [h["x-ratelimit-remaining-requests"] for h in seen] == ["2", "1", "0", "0"]
        assert all(h["x-ratelimit-limit-tokens"] == "100000" for h in seen)
        remaining = [int(h["x-ratelimit-remaining-tokens"]) for h in seen[:3]]
        assert 100_000 > remaining[0] > remaining[1] > remaining[2] > 90_000, remaining
        assert all(
            1 <= int(h["x-ratelimit-reset-requests"].removesuffix("s")) <= 60
            for h in seen
            if "ms" not in h["x-ratelimit-reset-requests"]
        )
        assert "retry-after" in seen[3] and "retry-after" not in seen[0]
        # the budget's headroom: earlier answers' cost and this one's worst case, across both replicas
        assert [h["x-tierwise-budget-limit-daily-usd"] for h in seen[:3]] == ["5"] * 3
        left = [float(h["x-tierwise-budget-remaining-daily-usd"]) for h in seen[:3]]
        assert 5.0 > left[0] > left[1] > left[2] > 4.9, left
    finally:
        reps.stop()


def test_database_outage_loses_no_ledger_rows(tmp_path: Path, own_upstream: str, pg_url: str) -> None:
    pg_port = int(pg_url.rsplit(":", maxsplit=1)[-1].split("/", maxsplit=1)[0])
    proxy = TcpProxy(pg_port)
    via_proxy = pg_url.replace(f":{pg_port}/", f":{proxy.port}/")
    reps = Replicas(tmp_path, three_tier_policy(own_upstream), via_proxy, None, MASTER, n=1)
    url = reps.urls[0]
    try:
        ids = [chat(url + "/v1", "none").headers["x-tierwise-request-id"] for _ in range(5)]
        proxy.cut()
        during = []
        for _ in range(20):
            r = chat(url + "/v1", "none")
            assert r.status_code == 200  # serving goes on while the ledger database is away
            during.append(r.headers["x-tierwise-request-id"])
        deadline = time.monotonic() + 10  # the writer's next flush finds the database gone
        while not any("ledger database unavailable" in d for d in httpx.get(url + "/readyz").json()["degraded"]):
            assert time.monotonic() < deadline, "readiness never said the ledger database is away"
            time.sleep(0.1)
        proxy.restore()
        ids += during
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = {r[0] for r in _pg_rows(pg_url, "select request_id from requests")}
            if set(ids) <= got:
                break
            time.sleep(0.5)
        assert set(ids) <= got, f"missing {len(set(ids) - got)} rows"
        assert httpx.get(url + "/readyz").json()["degraded"] == []
    finally:
        reps.stop()
        proxy.close()


def test_near_budget_end_requests_are_steered_to_a_cheaper_tier(
    start_gateway: GatewayFactory, fake_upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_MASTER_KEY", MASTER)
    gw = start_gateway(
        three_tier_policy(fake_upstream, extra="limits: {budget_steer_below: 0.95, budget_steer_tier: local}")
    )
    info = admin(gw.url, "POST", "/keys", json={"budget_daily_usd": 0.0005}).json()
    first = chat(gw.v1, info["key"], "tier/frontier", max_tokens=20)
    assert first.headers["x-tierwise-tier"] == "frontier"  # plenty of budget left
    second = chat(gw.v1, info["key"], "tier/frontier", max_tokens=20)
    assert second.headers["x-tierwise-tier"] == "local"
    row = gw.rows("request_id = ?", (second.headers["x-tierwise-request-id"],))[0]
    assert "steered frontier -> local" in row["fallbacks"]


def test_keys_cli_wraps_the_admin_api(keyed) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "TIERWISE_MASTER_KEY": MASTER}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "keys", "--url", keyed.url, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )

    made = cli("create", "--owner", "bob", "--budget-daily", "1.5", "--rpm", "60")
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["key"].startswith("sk-tw-") and info["budget_daily_usd"] == 1.5 and "not shown again" in made.stderr
    listed = json.loads(cli("list").stdout)["data"]
    assert [k["owner"] for k in listed] == ["bob"] and info["key"] not in json.dumps(listed)
    assert json.loads(cli("revoke", info["id"]).stdout)["revoked"] is True
    assert chat(keyed.v1, info["key"]).status_code == 401
    missing = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "list"],
        cwd=REPO,
        env={k: v for k, v in env.items() if k != "TIERWISE_MASTER_KEY"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
