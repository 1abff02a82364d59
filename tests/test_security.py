"""Attacks from a client with a valid key, against a real ``tierwise serve``.

The fake upstream plays the provider (OpenAI-compatible and Anthropic's API, through litellm);
a capture server plays the attacker's endpoint. Each test reproduces an attack that once worked.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.capture import CaptureServer
from tests.conftest import REPO, fake_stats
from tests.serve import ServeProcess

PROVIDER_KEY = "sk-ant-policy-secret-0123456789"


def _policy(fake_url: str, extra: str = "") -> str:
    return f"""
    version: 1
    tiers:
      - name: mid
        deployments:
          - {{name: via-litellm, model: anthropic/claude-haiku-4-5, api_base: "{fake_url}",
              api_key_env: TIERWISE_TEST_PROVIDER_KEY, max_retries: 0,
              price: {{input_per_1m: 1, output_per_1m: 5}}}}
      - name: frontier
        deployments:
          - {{name: passthrough, model: openai/echo, api_base: "{fake_url}/v1",
              api_key_env: TIERWISE_TEST_PROVIDER_KEY, max_retries: 0,
              price: {{input_per_1m: 2.5, output_per_1m: 10}}}}
    routes:
      - {{name: cheap, tier: mid}}
    dispatch: {{fallback_up: false}}
    {extra}
    """


@pytest.fixture(scope="module")
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def _serve(tmp: Path, fake: str, extra: str = "") -> Iterator[ServeProcess]:
    server = ServeProcess(tmp, _policy(fake, extra), {"TIERWISE_TEST_PROVIDER_KEY": PROVIDER_KEY})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, fake_upstream: str) -> Iterator[ServeProcess]:
    yield from _serve(tmp_path_factory.mktemp("strict"), fake_upstream)


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory, fake_upstream: str) -> Iterator[ServeProcess]:
    yield from _serve(tmp_path_factory.mktemp("drop"), fake_upstream, "limits: {unknown_fields: drop}")


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


def _chat(gw: ServeProcess, model: str, stream: bool, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream, **extra}
    with httpx.stream("POST", gw.v1 + "/chat/completions", json=body, timeout=30) as r:
        r.read()
    return r


def _answer(r: httpx.Response, stream: bool) -> str:
    if not stream:
        return str(r.json()["choices"][0]["message"]["content"])
    text = ""
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    return text


def _ledger(gw: ServeProcess) -> list[dict[str, Any]]:
    con = sqlite3.connect(gw.db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        con.close()


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
    r = _chat(strict, deployment, stream, **fields)
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
    r = _chat(dropping, "via-litellm", stream, **fields)
    assert r.status_code == 200, r.text
    assert _answer(r, stream) == "[fake echo] hello"  # the provider's answer, not ``mock_response``
    assert capture.requests == []
    call = fake_stats(fake_upstream)["last_request"]
    assert call["headers"]["x-api-key"] == PROVIDER_KEY  # the policy's key, to the policy's address
    assert call["body"]["model"] == "claude-haiku-4-5"
    assert not set(call["body"]) & {"fallbacks", "model_list", "callbacks", "mock_response", "metadata"}
    row = _wait_rows(dropping, r.headers["x-tierwise-request-id"])[0]
    assert row["upstream_model"] == "anthropic/claude-haiku-4-5"
    assert row["cost_usd"] > 0  # a real (fake-upstream) call, priced from its usage


def test_metadata_is_an_openai_field_but_not_a_litellm_option(
    strict: ServeProcess, capture: CaptureServer, fake_upstream: str
) -> None:
    """``metadata`` is allowlisted (OpenAI's API has it) yet litellm reads it as its own option:
    it is passed through on the OpenAI-compatible path and withheld from litellm."""
    meta = {"metadata": {"langsmith_base_url": capture.url}}
    assert _chat(strict, "passthrough", False, **meta).status_code == 200
    assert fake_stats(fake_upstream)["last_request"]["body"]["metadata"] == meta["metadata"]
    assert _chat(strict, "via-litellm", False, **meta).status_code == 200
    assert "metadata" not in fake_stats(fake_upstream)["last_request"]["body"]
    assert capture.requests == []


def _wait_rows(gw: ServeProcess, request_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = [r for r in _ledger(gw) if r["request_id"] == request_id]
        if rows:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


# -- upstream failures, budgets, streams, open mode: a second gateway with keys -------------------
MASTER = "sk-master-security-0123456789"


def _attack_policy(fake_url: str) -> str:
    def dep(name: str, model: str, price: str) -> str:
        return (
            f'{{name: {name}, model: openai/{model}, api_base: "{fake_url}/v1", api_key_env: TIERWISE_TEST_PROVIDER_KEY,'
            f" max_retries: 0, price: {price}}}"
        )

    return f"""
    version: 1
    tiers:
      - name: local
        deployments:
          - {dep("choosy-local", "no-json-schema", "{input_per_1m: 0, output_per_1m: 0}")}
      - name: mid
        deployments:
          - {dep("echo-mid", "echo", "{input_per_1m: 0.15, output_per_1m: 0.6}")}
      - name: frontier
        deployments:
          - {dep("billing", "bills-request", "{input_per_1m: 2.5, output_per_1m: 10}")}
    routes:
      - {{name: cheap, tier: local}}
    dispatch: {{cooldown_s: 60, failures_before_cooldown: 3, max_stream_s: 1.0}}
    """


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, fake_upstream: str) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("keyed")
    extra_tiers = {
        "leaky401": "error-echo-auth-401",
        "leaky500": "error-echo-auth-500",
        "leaky400": "error-echo-auth-400",
        "cut": "truncated-stream",
        "endless": "never-ending-stream",
        "sluggish": "slow-1500",
    }
    policy = _attack_policy(fake_upstream)
    tiers = "".join(
        f"""
      - name: t-{name}
        deployments:
          - {{name: {name}, model: openai/{model}, api_base: "{fake_upstream}/v1",
              api_key_env: TIERWISE_TEST_PROVIDER_KEY, max_retries: 0, price: {{input_per_1m: 1, output_per_1m: 1}}}}"""
        for name, model in extra_tiers.items()
    )
    refused = """
      - name: t-refused
        deployments:
          - {name: refused, model: openai/echo, api_base: "http://127.0.0.1:9/v1", max_retries: 0,
             price: {input_per_1m: 1, output_per_1m: 1}}"""
    policy = policy.replace("    routes:", tiers.removeprefix("\n") + refused + "\n    routes:", 1)
    env = {"TIERWISE_TEST_PROVIDER_KEY": PROVIDER_KEY, "TIERWISE_MASTER_KEY": MASTER}
    server = ServeProcess(tmp, policy, env)
    yield server
    server.stop()


def _key(gw: ServeProcess, **fields: Any) -> str:
    r = httpx.post(gw.url + "/admin/keys", json=fields, headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def _post(gw: ServeProcess, key: str, body: dict[str, Any], timeout: float = 30) -> httpx.Response:
    return httpx.post(
        gw.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=timeout
    )


def _msg(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize("deployment", ["leaky401", "leaky500", "leaky400"])
def test_upstream_error_bodies_are_neither_relayed_nor_logged(keyed: ServeProcess, deployment: str) -> None:
    key = _key(keyed)
    r = _post(keyed, key, _msg(deployment))
    assert r.status_code == (400 if deployment == "leaky400" else 502), r.text
    for secret in (PROVIDER_KEY, "Traceback", "/srv/fake"):
        assert secret not in r.text
    time.sleep(0.3)
    assert PROVIDER_KEY not in keyed.log.read_text()


def test_a_refused_connection_is_a_clean_message(keyed: ServeProcess) -> None:
    r = _post(keyed, _key(keyed), _msg("refused"))
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert message == "every upstream deployment failed; the last one: the upstream could not be reached"
    for internal in ("Cannot connect", "ssl:", "SSLContext", "127.0.0.1:9"):
        assert internal not in r.text


def test_budget_holds_against_large_tools_under_concurrency(keyed: ServeProcess) -> None:
    """The provider bills the tools too; 200 concurrent requests must not outspend $0.01."""
    key = _key(keyed, budget_daily_usd=0.01)
    fields = {f"field_{i}": {"type": "string", "description": "d" * 300} for i in range(15)}  # ~5k characters
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": fields}}}]
    body = _msg("billing", tools=tools, tool_choice="none", max_tokens=16)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: _post(keyed, key, body).status_code, range(200)))
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
        return sum(r["error_type"] == "invalid_api_key" for r in _ledger(keyed))

    before = refused()

    def burst(n: int) -> list[int]:
        with httpx.Client(base_url=keyed.v1, timeout=30) as client:
            return [
                client.post(
                    "/chat/completions", json=_msg("echo-mid"), headers={"authorization": f"Bearer sk-tw-made-up-{i}"}
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
    key = _key(keyed, budget_daily_usd=0.002)
    deep: Any = {"type": "object"}
    for _ in range(300):
        deep = {"type": "object", "properties": {"x": deep}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    for _ in range(5):
        r = _post(keyed, key, _msg("echo-mid", tools=tools))
        assert r.status_code == 400 and "nested" in r.json()["error"]["message"]
    assert _post(keyed, key, _msg("echo-mid", max_tokens=10)).status_code == 200  # the budget is all there


def test_a_stream_that_stops_early_ends_with_an_error_and_a_502_row(keyed: ServeProcess) -> None:
    with httpx.stream(
        "POST",
        keyed.v1 + "/chat/completions",
        json=_msg("cut", stream=True),
        headers={"authorization": f"Bearer {_key(keyed)}"},
    ) as r:
        text = r.read().decode()
        rid = r.headers["x-tierwise-request-id"]
    assert r.status_code == 200 and "upstream_truncated" in text and "[DONE]" not in text
    row = _wait_rows(keyed, rid)[0]
    assert (row["status_code"], row["error_type"]) == (502, "upstream_truncated")


def test_a_never_ending_stream_is_cut_at_max_stream_s(keyed: ServeProcess) -> None:
    started = time.monotonic()
    with httpx.stream(
        "POST",
        keyed.v1 + "/chat/completions",
        json=_msg("endless", stream=True),
        headers={"authorization": f"Bearer {_key(keyed)}"},
    ) as r:
        text = r.read().decode()
        rid = r.headers["x-tierwise-request-id"]
    assert time.monotonic() - started < 10 and "stream_too_long" in text
    assert _wait_rows(keyed, rid)[0]["status_code"] == 504


def test_a_client_that_leaves_before_the_headers_is_a_499(keyed: ServeProcess) -> None:
    key = _key(keyed)
    with pytest.raises(httpx.ReadTimeout):
        _post(keyed, key, _msg("sluggish", "gone before you answer", stream=True), timeout=0.3)
    rows = _wait_for(
        keyed, lambda rs: any(r["deployment"] == "sluggish" and r["status_code"] == 499 for r in rs), timeout_s=10
    )
    assert any(r["deployment"] == "sluggish" and r["error_type"] == "client_disconnected" for r in rows), [
        (r["deployment"], r["status_code"], r["error_type"]) for r in rows[-5:]
    ]


def test_discovery_endpoints_need_a_key_once_keys_exist(keyed: ServeProcess) -> None:
    key = _key(keyed)
    for path in ("/v1/models", "/readyz", "/openapi.json", "/docs"):
        assert httpx.get(keyed.url + path).status_code == 401, path
        assert httpx.get(keyed.url + path, headers={"authorization": f"Bearer {key}"}).status_code == 200, path
        assert httpx.get(keyed.url + path, headers={"authorization": f"Bearer {MASTER}"}).status_code == 200, path
    assert httpx.get(keyed.url + "/healthz").status_code == 200
    assert "TIERWISE_TEST_PROVIDER_KEY" not in httpx.get(keyed.url + "/v1/models").text


def test_a_request_one_deployment_cannot_serve_does_not_take_it_offline(keyed: ServeProcess) -> None:
    key = _key(keyed)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    r = _post(keyed, key, _msg("cheap", response_format=schema))
    assert r.status_code == 200 and r.headers["x-tierwise-tier"] == "mid"
    assert "choosy-local: http_500" in r.headers["x-tierwise-fallbacks"]  # rerouted, and it says so
    for _ in range(5):  # everyone else is still served by the local deployment
        assert _post(keyed, key, _msg("cheap")).headers["x-tierwise-tier"] == "local"
    ready = httpx.get(keyed.url + "/readyz", headers={"authorization": f"Bearer {key}"}).json()
    assert not any("choosy-local" in d for d in ready["degraded"])


@pytest.mark.parametrize(
    ("field", "value"), [("stream", "yes"), ("max_tokens", 1e9), ("tools", [{"type": "function", "function": "x"}])]
)
def test_wrong_types_are_refused_before_any_upstream(
    keyed: ServeProcess, fake_upstream: str, field: str, value: Any
) -> None:
    before = len(fake_stats(fake_upstream)["requests"])
    r = _post(keyed, _key(keyed), _msg("cheap", **{field: value}))
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(field)
    assert len(fake_stats(fake_upstream)["requests"]) == before


def test_more_than_one_worker_with_keys_and_no_redis_refuses_to_start(tmp_path: Path, fake_upstream: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(_policy(fake_upstream)))
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


def _wait_for(gw: ServeProcess, ok: Any, timeout_s: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = _ledger(gw)
        if ok(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


# -- client-supplied schemas are data, never code; every paid call is counted --------------------
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_client_schema_is_never_fetched(keyed: ServeProcess, capture: CaptureServer, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": capture.url + "/internal"}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "file:///etc/passwd"}}}]
    for extra in ({"response_format": fmt}, {"tools": tools}):
        with httpx.stream(
            "POST",
            keyed.v1 + "/chat/completions",
            json=_msg("echo-mid", stream=stream, **extra),
            headers={"authorization": f"Bearer {_key(keyed)}"},
            timeout=30,
        ) as r:
            r.read()
        assert r.status_code == 200, r.text
    time.sleep(0.3)
    assert capture.requests == []


def test_a_catastrophic_pattern_stalls_nothing(keyed: ServeProcess) -> None:
    """The answer is checked against the client's schema; its regular expressions are not run."""
    schema = {"type": "object", "properties": {"echo": {"type": "string", "pattern": "^(a|a)*$"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    key = _key(keyed)
    started = time.monotonic()
    r = _post(keyed, key, _msg("echo-mid", "a" * 40 + "!", response_format=fmt))
    assert r.status_code == 200 and time.monotonic() - started < 5


def _schema_bomb(depth: int) -> dict[str, Any]:
    """Each level's anyOf refers to the next twice: 2**depth paths through ~1.8 KB at depth 24."""
    defs: dict[str, Any] = {f"l{i}": {"anyOf": [{"$ref": f"#/$defs/l{i + 1}"}] * 2} for i in range(depth)}
    defs[f"l{depth}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "$ref": "#/$defs/l0"}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _bomb_requests(model: str, bomb: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    bomb = bomb or _schema_bomb(24)
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": bomb}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": bomb}}]
    return [
        ("/chat/completions", _msg(model, response_format=fmt)),
        ("/chat/completions", _msg(model, response_format=fmt, stream=True)),
        ("/chat/completions", _msg(model, tools=tools)),
        (
            "/responses",
            {"model": model, "input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": bomb}}},
        ),
        (
            "/messages",
            {
                "model": model,
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "f", "input_schema": bomb}],
            },
        ),
    ]


def test_a_schema_bomb_is_served_priced_and_stalls_nothing(keyed: ServeProcess) -> None:
    """A 1.8 KB schema whose $refs double the work per level froze the loop and grew the gateway
    to 19.6 GB: its check is skipped with the reason, while /healthz answers and memory stays put."""
    key = _key(keyed)
    auth = {"authorization": f"Bearer {key}", "x-api-key": key}
    for path, body in _bomb_requests("echo-mid"):  # each API's first call loads its translator
        plain = {k: v for k, v in body.items() if k not in ("response_format", "tools", "text")}
        assert httpx.post(keyed.v1 + path, json=plain, headers=auth, timeout=60).status_code == 200
    start_rss = _rss_mb(keyed.proc.pid)
    for path, body in _bomb_requests("echo-mid"):
        answer = _in_flight(keyed, path, body, auth, within_s=0.1)
        row = _wait_rows(keyed, answer.headers["x-tierwise-request-id"])[0]
        assert row["status_code"] == 200 and row["cost_usd"] > 0
        assert "answer check skipped: the schema expands" in (row["fallbacks"] or ""), (path, row["fallbacks"])
        assert _rss_mb(keyed.proc.pid) - start_rss < 50, path


def _in_flight(
    gw: ServeProcess, path: str, body: dict[str, Any], auth: dict[str, str], within_s: float
) -> httpx.Response:
    """Send ``body`` three times at once; /healthz answers within ``within_s`` all the while."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sent = [pool.submit(httpx.post, gw.v1 + path, json=body, headers=auth, timeout=60) for _ in range(3)]
        slowest = 0.0
        while not all(f.done() for f in sent):
            started = time.monotonic()
            assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        answers = [f.result() for f in sent]
    assert slowest < within_s, (path, slowest)
    assert all(r.status_code == 200 for r in answers), [r.text[:200] for r in answers]
    return answers[0]


@pytest.mark.parametrize("kind", ["enum", "errors"])
def test_schemas_whose_single_steps_are_costly_stall_nothing(keyed: ServeProcess, kind: str) -> None:
    """Found by attacking the step budget: one enum step compares with every entry and writes them
    all into its error message (an 800 KB schema stalled the loop 4 s, RSS +240 MB); an anyOf keeps
    every branch's error, each quoting the answer (a 400 KB echoed answer: +800 MB)."""
    key = _key(keyed)
    auth = {"authorization": f"Bearer {key}", "x-api-key": key}
    if kind == "enum":
        bomb: dict[str, Any] = {"$defs": {"E": {"enum": [""] * 30_000}}, "anyOf": [{"$ref": "#/$defs/E"}] * 2_000}
        text = "hi"
    else:
        bomb, text = {"anyOf": [{"type": "string"}] * 2_000}, "x" * 200_000
    requests = [(p, b) for p, b in _bomb_requests("echo-mid", bomb) if p != "/messages"]
    for path, body in requests:  # each API's first call loads its translator
        plain = {k: v for k, v in body.items() if k not in ("response_format", "tools", "text")}
        assert httpx.post(keyed.v1 + path, json=plain, headers=auth, timeout=60).status_code == 200
    start_rss = _rss_mb(keyed.proc.pid)
    for path, bombed in requests:
        body = {**bombed, "messages": [{"role": "user", "content": text}]} if "messages" in bombed else bombed
        # Three such requests at once, checked in the gateway's process (92b65d6): /healthz waited
        # 3.0 s (enum) and 0.6 s (errors), RSS grew 1,090 and 850 MB; now 0.06 and 0.15 s, +4 MB.
        # Reading the bodies and answers themselves (120-200 KB) takes 0.1-0.4 s of the loop on a busy
        # machine, hence the 1 s bound; memory is what tells the two apart most.
        answer = _in_flight(keyed, path, body, auth, within_s=1.0)
        row = _wait_rows(keyed, answer.headers["x-tierwise-request-id"])[0]
        assert row["status_code"] == 200 and row["cost_usd"] > 0
        assert _rss_mb(keyed.proc.pid) - start_rss < 50, path


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_broken_client_schema_is_served_priced_and_ledgered(keyed: ServeProcess, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}
    with httpx.stream(
        "POST",
        keyed.v1 + "/chat/completions",
        json=_msg("billing", stream=stream, response_format=fmt),
        headers={"authorization": f"Bearer {_key(keyed)}"},
        timeout=30,
    ) as r:
        r.read()
    assert r.status_code == 200
    row = _wait_rows(keyed, r.headers["x-tierwise-request-id"])[0]
    assert row["status_code"] == 200 and row["cost_usd"] > 0


@pytest.mark.parametrize(
    ("tool", "why"),
    [
        ({"type": "custom", "custom": {"name": "c"}}, ""),
        # litellm copies every $ref out for some providers (Bedrock tools, Anthropic's output format)
        ({"type": "function", "function": {"name": "f", "parameters": _schema_bomb(24)}}, "expands to more than"),
    ],
    ids=["custom-tool", "schema-bomb"],
)
def test_a_request_litellm_cannot_translate_is_a_400_and_cools_nothing(
    strict: ServeProcess, tool: Any, why: str
) -> None:
    for _ in range(4):
        r = httpx.post(strict.v1 + "/chat/completions", json=_msg("via-litellm", tools=[tool]), timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "unsupported_by_provider" and why in r.json()["error"]["message"]
    assert not any("via-litellm" in d for d in httpx.get(strict.url + "/readyz").json()["degraded"])
    assert httpx.post(strict.v1 + "/chat/completions", json=_msg("via-litellm"), timeout=30).status_code == 200


def test_a_stream_left_early_is_charged_for_the_whole_request(keyed: ServeProcess) -> None:
    """No usage from the upstream: the row still counts every character the provider bills."""
    props = {f"f{i}": {"type": "string", "description": "d" * 300} for i in range(30)}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": props}}}]
    body = _msg("sluggish", "hi", stream=True, tools=tools, tool_choice="none", max_tokens=8)
    key = _key(keyed)
    with pytest.raises(httpx.ReadTimeout):
        _post(keyed, key, body, timeout=0.3)
    key_id = httpx.get(keyed.url + "/admin/keys", headers={"authorization": f"Bearer {MASTER}"}).json()["data"][-1][
        "id"
    ]
    rows = _wait_for(keyed, lambda rs: any(r["api_key_id"] == key_id for r in rs))
    row = next(r for r in rows if r["api_key_id"] == key_id)
    assert row["status_code"] == 499
    assert row["prompt_tokens"] >= len(json.dumps(body)) // 5 and row["usage_estimated"] == 1


def test_the_output_limit_reserved_is_the_one_sent(keyed: ServeProcess, fake_upstream: str) -> None:
    key = _key(keyed)
    _post(keyed, key, _msg("echo-mid"))
    assert fake_stats(fake_upstream)["last_request"]["body"]["max_tokens"] == 4096  # the policy's default
    _post(keyed, key, _msg("echo-mid", max_completion_tokens=1, max_tokens=50000))
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
    r = httpx.post(strict.v1 + "/chat/completions", json={**_msg("via-litellm"), **extra}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert len(fake_stats(fake_upstream)["requests"]) == before


def test_tokens_per_minute_hold_under_concurrency(keyed: ServeProcess) -> None:
    key = _key(keyed, tpm_limit=3000)
    body = _msg("echo-mid", "x " * 2000, max_tokens=16)  # ~2k tokens held each
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: _post(keyed, key, body).status_code, range(20)))
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
    key = _key(keyed)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda _: _post(keyed, key, _msg("cheap", response_format=schema)), range(4)))
    assert {r.status_code for r in rs} == {200}
    probes = _wait_for(keyed, lambda rows: any(r["purpose"] == "probe" for r in rows))
    probe = [r for r in probes if r["purpose"] == "probe"][-1]
    assert probe["deployment"] == "choosy-local" and probe["status_code"] == 200
    assert _post(keyed, key, _msg("cheap")).headers["x-tierwise-tier"] == "local"
