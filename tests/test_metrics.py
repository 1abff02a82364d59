"""GET /metrics: parsed with Prometheus' own text-format parser after real traffic on every API,
and compared with the ledger; protected when keys exist; one count across ``--workers N``."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory, three_tier_policy
from tests.serve import ServeProcess
from tests.test_api_embeddings import embeddings_policy

MASTER = "sk-master-metrics-0123456789"
SCRAPER = "metrics-scraper-token-0123456789"


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples if s.name == name
    ]


def by(text: str, name: str, *labels: str) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for sample_labels, value in samples(text, name):
        out[tuple(sample_labels[label] for label in labels)] += value
    return out


def test_counters_equal_the_ledger_after_mixed_traffic(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(embeddings_policy(fake_upstream))
    oa = openai.OpenAI(base_url=gw.v1, api_key="sk-local", max_retries=0)
    an = anthropic.Anthropic(base_url=gw.url, api_key="sk-local", max_retries=0)
    hello = [{"role": "user", "content": "hello metrics"}]
    oa.chat.completions.create(model="cheap", messages=hello)  # type: ignore[arg-type]
    list(oa.chat.completions.create(model="tier/frontier", messages=hello, stream=True))  # type: ignore[arg-type]
    oa.responses.create(model="tier/mid", input="hello metrics")
    with oa.responses.stream(model="cheap", input="hello metrics") as stream:
        stream.get_final_response()
    an.messages.create(model="tier/mid", max_tokens=16, messages=hello)  # type: ignore[arg-type]
    with an.messages.stream(model="cheap", max_tokens=16, messages=hello) as s:  # type: ignore[arg-type]
        s.get_final_message()
    oa.embeddings.create(model="embed-small", input=["a", "b c"])
    with pytest.raises(openai.BadRequestError):
        oa.responses.create(model="cheap", input="x", store=True)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="no-such-route", messages=hello)  # type: ignore[arg-type]

    rows = gw.rows(wait_for=9)
    assert len(rows) == 9
    text = httpx.get(gw.url + "/metrics").text

    ledger = Counter((r["api"], f"{r['status_code'] // 100}xx") for r in rows)
    assert by(text, "tierwise_requests_total", "api", "status") == ledger
    assert ledger[("embeddings", "2xx")] == 1 and ledger[("responses", "4xx")] == 1
    per_tier = Counter((r["api"], r["tier"] or "") for r in rows)
    assert by(text, "tierwise_request_duration_seconds_count", "api", "tier") == per_tier
    ttft = Counter((r["api"], r["tier"] or "") for r in rows if r["ttft_ms"] is not None)
    assert by(text, "tierwise_time_to_first_token_seconds_count", "api", "tier") == ttft
    tokens = by(text, "tierwise_tokens_total", "api", "kind")
    for api in ("chat", "responses", "messages", "embeddings"):
        assert tokens[(api, "prompt")] == sum(r["prompt_tokens"] for r in rows if r["api"] == api)
        assert tokens[(api, "completion")] == sum(r["completion_tokens"] for r in rows if r["api"] == api)
    cost = by(text, "tierwise_cost_usd_total", "deployment")
    assert sum(cost.values()) == pytest.approx(sum(r["cost_usd"] for r in rows))
    assert cost[("embed-small",)] == pytest.approx(3 * 0.02 / 1e6)
    assert samples(text, "tierwise_ledger_queue_depth")[0][1] == 0
    assert samples(text, "tierwise_ledger_spool_bytes")[0][1] == 0
    # Only the policy's names and the API label the series: never a key or a client's model name.
    assert "no-such-route" not in text and "hello" not in text


def test_metrics_need_a_token_once_keys_exist(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream), master_key=MASTER, metrics_token=SCRAPER)
    assert httpx.get(gw.url + "/metrics").status_code == 200  # open mode: loopback may read it
    created = httpx.post(gw.url + "/admin/keys", json={"owner": "app"}, headers={"authorization": f"Bearer {MASTER}"})
    client_key = created.json()["key"]

    def scrape(token: str | None) -> httpx.Response:
        return httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {token}"} if token else {})

    assert scrape(None).status_code == 401
    assert scrape(client_key).status_code == 401  # a client's key does not read the gateway's metrics
    assert scrape(MASTER).status_code == 200
    ok = scrape(SCRAPER)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_workers_add_up(tmp_path: Path, fake_upstream: str) -> None:
    served = ServeProcess(tmp_path, three_tier_policy(fake_upstream), None, "--workers", "2")
    try:
        body = {"model": "cheap", "messages": [{"role": "user", "content": "x"}]}
        for _ in range(12):  # a fresh connection each: the kernel spreads them over the workers
            assert httpx.post(served.v1 + "/chat/completions", json=body).status_code == 200
        con = sqlite3.connect(served.db)
        try:
            for _ in range(100):
                if con.execute("SELECT count(*) FROM requests").fetchone()[0] == 12:
                    break
                httpx.get(served.url + "/healthz")  # time for the workers' ledger writers
        finally:
            con.close()
        for _ in range(8):  # whichever worker answers the scrape reports every worker's requests
            text = httpx.get(served.url + "/metrics").text
            assert sum(by(text, "tierwise_requests_total", "api").values()) == 12
    finally:
        served.stop()
