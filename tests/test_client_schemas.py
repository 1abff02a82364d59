"""Client-supplied structures that drive work after admission (schemas, patterns, tool
definitions), attacked against a real ``tierwise serve``: they are data, never code, and the work
they cause is bounded (gateway/quality/schemas.py, gateway/quality/sandbox.py)."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.attack import chat_body, new_key, post_chat, wait_rows
from tests.capture import CaptureServer
from tests.serve import ServeProcess


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_client_schema_is_never_fetched(keyed: ServeProcess, capture: CaptureServer, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": capture.url + "/internal"}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "file:///etc/passwd"}}}]
    for extra in ({"response_format": fmt}, {"tools": tools}):
        with httpx.stream(
            "POST",
            keyed.v1 + "/chat/completions",
            json=chat_body("echo-mid", stream=stream, **extra),
            headers={"authorization": f"Bearer {new_key(keyed)}"},
            timeout=30,
        ) as r:
            r.read()
        assert r.status_code == 200, r.text
        wait_rows(keyed, r.headers["x-tierwise-request-id"])  # written once the answer's check is done
    assert capture.requests == []


def test_a_catastrophic_pattern_stalls_nothing(keyed: ServeProcess) -> None:
    """The answer is checked against the client's schema; its regular expressions are not run."""
    schema = {"type": "object", "properties": {"echo": {"type": "string", "pattern": "^(a|a)*$"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    key = new_key(keyed)
    started = time.monotonic()
    r = post_chat(keyed, key, chat_body("echo-mid", "a" * 40 + "!", response_format=fmt))
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
        ("/chat/completions", chat_body(model, response_format=fmt)),
        ("/chat/completions", chat_body(model, response_format=fmt, stream=True)),
        ("/chat/completions", chat_body(model, tools=tools)),
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


@pytest.mark.timing
def test_a_schema_bomb_is_served_priced_and_stalls_nothing(keyed: ServeProcess) -> None:
    """A 1.8 KB schema whose $refs double the work per level froze the loop and grew the gateway
    to 19.6 GB: its check is skipped with the reason, while /healthz answers and memory stays put."""
    key = new_key(keyed)
    auth = {"authorization": f"Bearer {key}", "x-api-key": key}
    for path, body in _bomb_requests("echo-mid"):  # each API's first call loads its translator
        plain = {k: v for k, v in body.items() if k not in ("response_format", "tools", "text")}
        assert httpx.post(keyed.v1 + path, json=plain, headers=auth, timeout=60).status_code == 200
    start_rss = _rss_mb(keyed.proc.pid)
    for path, body in _bomb_requests("echo-mid"):
        answer = _in_flight(keyed, path, body, auth, within_s=0.1)
        row = wait_rows(keyed, answer.headers["x-tierwise-request-id"])[0]
        assert row["status_code"] == 200 and row["cost_usd"] > 0
        assert "answer check skipped: the schema expands" in (row["fallbacks"] or ""), (path, row["fallbacks"])
        assert _rss_mb(keyed.proc.pid) - start_rss < 50, path


def _in_flight(
    gw: ServeProcess, path: str, body: dict[str, Any], auth: dict[str, str], within_s: float
) -> httpx.Response:
    """Send ``body`` three times at once; /healthz answers within ``within_s`` all the while.
    The clients exist before the clock starts: building one (an SSL context, its certificates)
    takes ~60 ms of this process's CPU on some machines, which is the test's time, not the gateway's."""
    with (
        concurrent.futures.ThreadPoolExecutor(4) as pool,
        httpx.Client(timeout=60) as client,
        httpx.Client(timeout=5) as probe,
    ):
        sent = [pool.submit(client.post, gw.v1 + path, json=body, headers=auth) for _ in range(3)]
        slowest = 0.0
        while not all(f.done() for f in sent):
            started = time.monotonic()
            assert probe.get(gw.url + "/healthz").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        answers = [f.result() for f in sent]
    assert slowest < within_s, (path, slowest)
    assert all(r.status_code == 200 for r in answers), [r.text[:200] for r in answers]
    return answers[0]


@pytest.mark.timing
@pytest.mark.parametrize("kind", ["enum", "errors"])
def test_schemas_whose_single_steps_are_costly_stall_nothing(keyed: ServeProcess, kind: str) -> None:
    """Found by attacking the step budget: one enum step compares with every entry and writes them
    all into its error message (an 800 KB schema stalled the loop 4 s, RSS +240 MB); an anyOf keeps
    every branch's error, each quoting the answer (a 400 KB echoed answer: +800 MB)."""
    key = new_key(keyed)
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
        row = wait_rows(keyed, answer.headers["x-tierwise-request-id"])[0]
        assert row["status_code"] == 200 and row["cost_usd"] > 0
        assert _rss_mb(keyed.proc.pid) - start_rss < 50, path


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_broken_client_schema_is_served_priced_and_ledgered(keyed: ServeProcess, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}
    with httpx.stream(
        "POST",
        keyed.v1 + "/chat/completions",
        json=chat_body("billing", stream=stream, response_format=fmt),
        headers={"authorization": f"Bearer {new_key(keyed)}"},
        timeout=30,
    ) as r:
        r.read()
    assert r.status_code == 200
    row = wait_rows(keyed, r.headers["x-tierwise-request-id"])[0]
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
        r = httpx.post(strict.v1 + "/chat/completions", json=chat_body("via-litellm", tools=[tool]), timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "unsupported_by_provider" and why in r.json()["error"]["message"]
    assert not any("via-litellm" in d for d in httpx.get(strict.url + "/readyz").json()["degraded"])
    assert httpx.post(strict.v1 + "/chat/completions", json=chat_body("via-litellm"), timeout=30).status_code == 200
