"""What the attack tests share: the gateways they attack (real ``tierwise serve`` processes, the
fake upstream as their provider) and the requests they send. The fixtures are offered to every
test module through ``tests/conftest.py``.

- ``strict``: an Anthropic deployment through litellm and an OpenAI-compatible one, no keys.
- ``keyed``: keys on, tiers that leak secrets, cut streams, stall, refuse connections.
- ``capture``: the attacker's own endpoint, which must never be called.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.capture import CaptureServer
from tests.serve import ServeProcess

PROVIDER_KEY = "sk-ant-policy-secret-0123456789"


def litellm_policy(fake_url: str, extra: str = "") -> str:
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


def serve_litellm(tmp: Path, fake: str, extra: str = "") -> Iterator[ServeProcess]:
    server = ServeProcess(tmp, litellm_policy(fake, extra), {"TIERWISE_TEST_PROVIDER_KEY": PROVIDER_KEY})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, fake_upstream: str) -> Iterator[ServeProcess]:
    yield from serve_litellm(tmp_path_factory.mktemp("strict"), fake_upstream)


def chat_once(gw: ServeProcess, model: str, stream: bool, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream, **extra}
    with httpx.stream("POST", gw.v1 + "/chat/completions", json=body, timeout=30) as r:
        r.read()
    return r


def answer_text(r: httpx.Response, stream: bool) -> str:
    if not stream:
        return str(r.json()["choices"][0]["message"]["content"])
    text = ""
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    return text


def ledger_rows(gw: ServeProcess) -> list[dict[str, Any]]:
    con = sqlite3.connect(gw.db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        con.close()


def wait_rows(gw: ServeProcess, request_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = [r for r in ledger_rows(gw) if r["request_id"] == request_id]
        if rows:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


MASTER = "sk-master-security-0123456789"


def attack_policy(fake_url: str) -> str:
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
    policy = attack_policy(fake_upstream)
    tiers = "".join(
        f"""
      - name: t-{name}
        deployments:
          - {{name: {name}, model: openai/{model}, api_base: "{fake_upstream}/v1",
              api_key_env: TIERWISE_TEST_PROVIDER_KEY, max_retries: 0, price: {{input_per_1m: 1, output_per_1m: 1}}}}"""
        for name, model in extra_tiers.items()
    )
    refused = f"""
      - name: t-refused
        deployments:
          - {{name: refused, model: openai/echo, api_base: "http://127.0.0.1:9/v1", max_retries: 0,
             price: {{input_per_1m: 1, output_per_1m: 1}}}}
      - name: t-cut-claude
        deployments:
          - {{name: cut-claude, model: anthropic/truncated-stream, api_base: "{fake_upstream}",
             api_key_env: TIERWISE_TEST_PROVIDER_KEY, max_retries: 0, price: {{input_per_1m: 1, output_per_1m: 1}}}}"""
    policy = policy.replace("    routes:", tiers.removeprefix("\n") + refused + "\n    routes:", 1)
    env = {"TIERWISE_TEST_PROVIDER_KEY": PROVIDER_KEY, "TIERWISE_MASTER_KEY": MASTER}
    server = ServeProcess(tmp, policy, env)
    yield server
    server.stop()


def new_key(gw: ServeProcess, **fields: Any) -> str:
    r = httpx.post(gw.url + "/admin/keys", json=fields, headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def post_chat(gw: ServeProcess, key: str, body: dict[str, Any], timeout: float = 30) -> httpx.Response:
    return httpx.post(
        gw.v1 + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=timeout
    )


def chat_body(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}
