"""Attacks from a client with a valid key, against a real ``tierwise serve``.

The fake upstream plays the provider (OpenAI-compatible and Anthropic's API, through litellm);
a capture server plays the attacker's endpoint. Each test reproduces an attack that once worked.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.attack import (
    MASTER,
    PROVIDER_KEY,
    answer_text,
    chat_body,
    chat_once,
    ledger_rows,
    litellm_policy,
    new_key,
    post_chat,
    serve_litellm,
    wait_rows,
)
from tests.capture import CaptureServer
from tests.conftest import REPO, fake_stats
from tests.serve import ServeProcess


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory, fake_upstream: str) -> Iterator[ServeProcess]:
    yield from serve_litellm(tmp_path_factory.mktemp("drop"), fake_upstream, "limits: {unknown_fields: drop}")


def _attacks(capture_url: str) -> dict[str, dict[str, Any]]:
    """litellm options a client once could set through the request body."""
    return {
        "fallbacks": {"fallbacks": [{"model": "openai/gpt-4o", "api_base": capture_url + "/steal"}]},
        "model_list": {"model_list": [{"model_name": "x", "litellm_params": {"model": "openai/gpt-4o"}}]},
        "callbacks": {"callbacks": ["langsmith"], "langsmith_base_url": capture_url + "/ssrf"},
        "mock_response": {"mock_response": "a fake answer, billed as real"},
        "timeout": {"timeout": 0.001},
        "num_retries": {"num_retries": 9},
        "api_base": {"api_base": capture_url + "/steal"},
        "extra_headers": {"extra_headers": {"x-evil": "1"}},
    }


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("deployment", ["via-litellm", "passthrough"])
@pytest.mark.parametrize(
    "attack",
    ["fallbacks", "model_list", "callbacks", "mock_response", "timeout", "num_retries", "api_base", "extra_headers"],
)
def test_litellm_options_in_the_body_are_refused(
    strict: ServeProcess, capture: CaptureServer, fake_upstream: str, deployment: str, stream: bool, attack: str
) -> None:
    fields = _attacks(capture.url)[attack]
    before = len(fake_stats(fake_upstream)["requests"])
    r = chat_once(strict, deployment, stream, **fields)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "unsupported_parameter" and err["param"] in fields
    assert capture.requests == []  # nothing, and no key, went to the attacker's address
    assert len(fake_stats(fake_upstream)["requests"]) == before  # nor to the provider


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_dropped_options_never_reach_litellm(
    dropping: ServeProcess, capture: CaptureServer, fake_upstream: str, stream: bool
) -> None:
    """Under ``unknown_fields: drop`` the call goes through, exactly as the policy says."""
    fields: dict[str, Any] = {}
    for attack in _attacks(capture.url).values():
        fields.update(attack)
    r = chat_once(dropping, "via-litellm", stream, **fields)
    assert r.status_code == 200, r.text
    assert answer_text(r, stream) == "[fake echo] hello"  # the provider's answer, not ``mock_response``
    assert capture.requests == []
    call = fake_stats(fake_upstream)["last_request"]
    assert call["headers"]["x-api-key"] == PROVIDER_KEY  # the policy's key, to the policy's address
    assert call["body"]["model"] == "claude-haiku-4-5"
    assert not set(call["body"]) & {"fallbacks", "model_list", "callbacks", "mock_response", "metadata"}
    row = wait_rows(dropping, r.headers["x-tierwise-request-id"])[0]
    assert row["upstream_model"] == "anthropic/claude-haiku-4-5"
    assert row["cost_usd"] > 0  # a real (fake-upstream) call, priced from its usage


def test_metadata_is_an_openai_field_but_not_a_litellm_option(
    strict: ServeProcess, capture: CaptureServer, fake_upstream: str
) -> None:
    """``metadata`` is allowlisted (OpenAI's API has it) yet litellm reads it as its own option:
    it is passed through on the OpenAI-compatible path and withheld from litellm."""
    meta = {"metadata": {"langsmith_base_url": capture.url}}
    assert chat_once(strict, "passthrough", False, **meta).status_code == 200
    assert fake_stats(fake_upstream)["last_request"]["body"]["metadata"] == meta["metadata"]
    assert chat_once(strict, "via-litellm", False, **meta).status_code == 200
    assert "metadata" not in fake_stats(fake_upstream)["last_request"]["body"]
    assert capture.requests == []


# -- upstream failures, budgets, streams, open mode: a second gateway with keys -------------------
@pytest.mark.parametrize("deployment", ["leaky401", "leaky500", "leaky400"])
def test_upstream_error_bodies_are_neither_relayed_nor_logged(keyed: ServeProcess, deployment: str) -> None:
    key = new_key(keyed)
    r = post_chat(keyed, key, chat_body(deployment))
    assert r.status_code == (400 if deployment == "leaky400" else 502), r.text
    for secret in (PROVIDER_KEY, "Traceback", "/srv/fake"):
        assert secret not in r.text
    # the failure is logged with the upstream's (redacted) message: that line is where a key would be
    log = _log_once(keyed, f"deployment {deployment} failed (attempt 1)")
    assert PROVIDER_KEY not in log


def test_a_refused_connection_is_a_clean_message(keyed: ServeProcess) -> None:
    r = post_chat(keyed, new_key(keyed), chat_body("refused"))
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert message == "every upstream deployment failed; the last one: the upstream could not be reached"
    for internal in ("Cannot connect", "ssl:", "SSLContext", "127.0.0.1:9"):
        assert internal not in r.text


def test_budget_holds_against_large_tools_under_concurrency(keyed: ServeProcess) -> None:
    """The provider bills the tools too; 200 concurrent requests must not outspend $0.01."""
    key = new_key(keyed, budget_daily_usd=0.01)
    fields = {f"field_{i}": {"type": "string", "description": "d" * 300} for i in range(15)}  # ~5k characters
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": fields}}}]
    body = chat_body("billing", tools=tools, tool_choice="none", max_tokens=16)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: post_chat(keyed, key, body).status_code, range(200)))
    assert codes.count(200) >= 1 and set(codes) <= {200, 429}
    key_id = httpx.get(keyed.url + "/admin/keys", headers={"authorization": f"Bearer {MASTER}"}).json()["data"][-1][
        "id"
    ]
    rows = _wait_for(
        keyed,
        lambda rs: len([r for r in rs if r["api_key_id"] == key_id and r["status_code"] == 200]) >= codes.count(200),
    )
    spent = sum(r["cost_usd"] for r in rows if r["api_key_id"] == key_id)
    assert 0 < spent <= 0.01


def test_unauthenticated_requests_cannot_grow_the_ledger(keyed: ServeProcess) -> None:
    """1,000 requests with made-up keys wrote 1,008 ledger rows."""

    def refused() -> int:  # other tests' rows may still be landing: count only these refusals
        return sum(r["error_type"] == "invalid_api_key" for r in ledger_rows(keyed))

    before = refused()

    def burst(n: int) -> list[int]:
        with httpx.Client(base_url=keyed.v1, timeout=30) as client:
            return [
                client.post(
                    "/chat/completions",
                    json=chat_body("echo-mid"),
                    headers={"authorization": f"Bearer sk-tw-made-up-{i}"},
                ).status_code
                for i in range(n)
            ]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = [c for part in pool.map(burst, [2_500] * 4) for c in part]
    assert codes == [401] * 10_000
    metrics = httpx.get(keyed.url + "/metrics", headers={"authorization": f"Bearer {MASTER}"}).text
    deadline = time.monotonic() + 5
    while refused() == before and time.monotonic() < deadline:  # the writer flushes every 0.05 s
        time.sleep(0.05)
    added = refused() - before
    assert 1 <= added <= 2, added  # one a client address a minute (the burst may cross a minute)
    counted = [
        line for line in metrics.splitlines() if line.startswith('tierwise_unauthenticated_refusals_total{api="chat"}')
    ]
    assert counted and float(counted[0].split()[-1]) >= 10_000, counted


def test_deep_nesting_is_a_400_and_strands_nothing(keyed: ServeProcess) -> None:
    key = new_key(keyed, budget_daily_usd=0.002)
    deep: Any = {"type": "object"}
    for _ in range(300):
        deep = {"type": "object", "properties": {"x": deep}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    for _ in range(5):
        r = post_chat(keyed, key, chat_body("echo-mid", tools=tools))
        assert r.status_code == 400 and "nested" in r.json()["error"]["message"]
    assert post_chat(keyed, key, chat_body("echo-mid", max_tokens=10)).status_code == 200  # the budget is all there


@pytest.mark.parametrize("deployment", ["cut", "cut-claude"])  # cut-claude: through litellm, which says "stop"
def test_a_stream_that_stops_early_ends_with_an_error_and_a_502_row(keyed: ServeProcess, deployment: str) -> None:
    with httpx.stream(
        "POST",
        keyed.v1 + "/chat/completions",
        json=chat_body(deployment, stream=True),
        headers={"authorization": f"Bearer {new_key(keyed)}"},
    ) as r:
        text = r.read().decode()
        rid = r.headers["x-tierwise-request-id"]
    assert r.status_code == 200 and "upstream_truncated" in text and "[DONE]" not in text
    assert '"finish_reason":"stop"' not in text.replace(" ", "")  # a cut answer is never passed off as whole
    row = wait_rows(keyed, rid)[0]
    assert (row["status_code"], row["error_type"]) == (502, "upstream_truncated")


def test_a_never_ending_stream_is_cut_at_max_stream_s(keyed: ServeProcess) -> None:
    started = time.monotonic()
    with httpx.stream(
        "POST",
        keyed.v1 + "/chat/completions",
        json=chat_body("endless", stream=True),
        headers={"authorization": f"Bearer {new_key(keyed)}"},
    ) as r:
        text = r.read().decode()
        rid = r.headers["x-tierwise-request-id"]
    assert time.monotonic() - started < 10 and "stream_too_long" in text
    assert wait_rows(keyed, rid)[0]["status_code"] == 504


def test_a_client_that_leaves_before_the_headers_is_a_499(keyed: ServeProcess) -> None:
    key = new_key(keyed)
    with pytest.raises(httpx.ReadTimeout):
        post_chat(keyed, key, chat_body("sluggish", "gone before you answer", stream=True), timeout=0.3)
    rows = _wait_for(
        keyed, lambda rs: any(r["deployment"] == "sluggish" and r["status_code"] == 499 for r in rs), timeout_s=10
    )
    assert any(r["deployment"] == "sluggish" and r["error_type"] == "client_disconnected" for r in rows), [
        (r["deployment"], r["status_code"], r["error_type"]) for r in rows[-5:]
    ]


def test_discovery_endpoints_need_a_key_once_keys_exist(keyed: ServeProcess) -> None:
    key = new_key(keyed)
    for path in ("/v1/models", "/readyz", "/openapi.json", "/docs"):
        assert httpx.get(keyed.url + path).status_code == 401, path
        assert httpx.get(keyed.url + path, headers={"authorization": f"Bearer {key}"}).status_code == 200, path
        assert httpx.get(keyed.url + path, headers={"authorization": f"Bearer {MASTER}"}).status_code == 200, path
    assert httpx.get(keyed.url + "/healthz").status_code == 200
    assert "TIERWISE_TEST_PROVIDER_KEY" not in httpx.get(keyed.url + "/v1/models").text


def test_a_request_one_deployment_cannot_serve_does_not_take_it_offline(keyed: ServeProcess) -> None:
    key = new_key(keyed)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    r = post_chat(keyed, key, chat_body("cheap", response_format=schema))
    assert r.status_code == 200 and r.headers["x-tierwise-tier"] == "mid"
    assert "choosy-local: http_500" in r.headers["x-tierwise-fallbacks"]  # rerouted, and it says so
    for _ in range(5):  # everyone else is still served by the local deployment
        assert post_chat(keyed, key, chat_body("cheap")).headers["x-tierwise-tier"] == "local"
    ready = httpx.get(keyed.url + "/readyz", headers={"authorization": f"Bearer {key}"}).json()
    assert not any("choosy-local" in d for d in ready["degraded"])


@pytest.mark.parametrize(
    ("field", "value"), [("stream", "yes"), ("max_tokens", 1e9), ("tools", [{"type": "function", "function": "x"}])]
)
def test_wrong_types_are_refused_before_any_upstream(
    keyed: ServeProcess, fake_upstream: str, field: str, value: Any
) -> None:
    before = len(fake_stats(fake_upstream)["requests"])
    r = post_chat(keyed, new_key(keyed), chat_body("cheap", **{field: value}))
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(field)
    assert len(fake_stats(fake_upstream)["requests"]) == before


def test_more_than_one_worker_with_keys_and_no_redis_refuses_to_start(tmp_path: Path, fake_upstream: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(litellm_policy(fake_upstream)))
    env = {**os.environ, "TIERWISE_MASTER_KEY": MASTER, "TIERWISE_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}"}
    env.pop("TIERWISE_REDIS_URL", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--policy",
            str(policy),
            "--workers",
            "2",
            "--port",
            "0",
            "--no-router",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "TIERWISE_REDIS_URL" in out.stderr


def _log_once(gw: ServeProcess, line: str, timeout_s: float = 10) -> str:
    """The server's log once it holds ``line``."""
    deadline = time.monotonic() + timeout_s
    while line not in (log := gw.log.read_text()):
        assert time.monotonic() < deadline, f"never logged: {line}"
        time.sleep(0.05)
    return log


def _wait_for(gw: ServeProcess, ok: Any, timeout_s: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = ledger_rows(gw)
        if ok(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


# -- every paid call is counted ---------------------------------------------------------------
def test_a_stream_left_early_is_charged_for_the_whole_request(keyed: ServeProcess) -> None:
    """No usage from the upstream: the row still counts every character the provider bills."""
    props = {f"f{i}": {"type": "string", "description": "d" * 300} for i in range(30)}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": props}}}]
    body = chat_body("sluggish", "hi", stream=True, tools=tools, tool_choice="none", max_tokens=8)
    key = new_key(keyed)
    with pytest.raises(httpx.ReadTimeout):
        post_chat(keyed, key, body, timeout=0.3)
    key_id = httpx.get(keyed.url + "/admin/keys", headers={"authorization": f"Bearer {MASTER}"}).json()["data"][-1][
        "id"
    ]
    rows = _wait_for(keyed, lambda rs: any(r["api_key_id"] == key_id for r in rs))
    row = next(r for r in rows if r["api_key_id"] == key_id)
    assert row["status_code"] == 499
    assert row["prompt_tokens"] >= len(json.dumps(body)) // 5 and row["usage_estimated"] == 1


def test_the_output_limit_reserved_is_the_one_sent(keyed: ServeProcess, fake_upstream: str) -> None:
    key = new_key(keyed)
    post_chat(keyed, key, chat_body("echo-mid"))
    assert fake_stats(fake_upstream)["last_request"]["body"]["max_tokens"] == 4096  # the policy's default
    post_chat(keyed, key, chat_body("echo-mid", max_completion_tokens=1, max_tokens=50000))
    sent = fake_stats(fake_upstream)["last_request"]["body"]
    assert sent["max_completion_tokens"] == 1 and "max_tokens" not in sent


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}
                ]
            },
            "messages[0].content[0].cache_control",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}}]}
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "JVBERi0="}}]}]},
            "messages[0].content[0].type",
        ),
        ({"web_search_options": {}}, "web_search_options"),
        ({"service_tier": "priority"}, "service_tier"),
    ],
    ids=["nested-cache-control", "http-image", "file-part", "web-search", "service-tier"],
)
def test_what_the_gateway_cannot_price_or_does_not_know_never_leaves(
    strict: ServeProcess, fake_upstream: str, extra: dict[str, Any], param: str
) -> None:
    before = len(fake_stats(fake_upstream)["requests"])
    r = httpx.post(strict.v1 + "/chat/completions", json={**chat_body("via-litellm"), **extra}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert len(fake_stats(fake_upstream)["requests"]) == before


def test_tokens_per_minute_hold_under_concurrency(keyed: ServeProcess) -> None:
    key = new_key(keyed, tpm_limit=3000)
    body = chat_body("echo-mid", "x " * 2000, max_tokens=16)  # ~2k tokens held each
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: post_chat(keyed, key, body).status_code, range(20)))
    assert codes.count(200) == 1 and set(codes) == {200, 429}


@pytest.mark.parametrize(
    "fields",
    [{"budget_daily_usd": float("inf")}, {"rpm_limit": 2**64}, {"owner": "a\x00b"}, {"tpm_limit": 10**13}],
    ids=["infinite-budget", "huge-rpm", "nul-owner", "huge-tpm"],
)
def test_admin_refuses_numbers_counters_cannot_hold(keyed: ServeProcess, fields: dict[str, Any]) -> None:
    body = json.dumps(fields).replace("Infinity", "1e400")
    r = httpx.post(
        keyed.url + "/admin/keys",
        content=body,
        headers={"authorization": f"Bearer {MASTER}", "content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert httpx.get(keyed.url + "/admin/keys", headers={"authorization": f"Bearer {MASTER}"}).status_code == 200


def test_a_deployment_that_answers_a_probe_is_not_cooled_by_requests_it_cannot_serve(keyed: ServeProcess) -> None:
    key = new_key(keyed)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda _: post_chat(keyed, key, chat_body("cheap", response_format=schema)), range(4)))
    assert {r.status_code for r in rs} == {200}
    probes = _wait_for(keyed, lambda rows: any(r["purpose"] == "probe" for r in rows))
    probe = [r for r in probes if r["purpose"] == "probe"][-1]
    assert probe["deployment"] == "choosy-local" and probe["status_code"] == 200
    assert post_chat(keyed, key, chat_body("cheap")).headers["x-tierwise-tier"] == "local"
