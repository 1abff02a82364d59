"""Open mode (no keys, the default): only loopback clients, never a web page the user has open.
Browsers send text/plain and form posts without a CORS preflight, and a DNS-rebound name reaches
loopback: both are refused before any upstream is called."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import fake_stats, three_tier_policy
from tests.serve import ServeProcess

_MSG = {"model": "cheap", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake_upstream: str) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path_factory.mktemp("open"), three_tier_policy(fake_upstream))
    yield server
    server.stop()


@pytest.mark.parametrize("host", ["localhost:80@evil.example", "[::1]evil", "evil.example"])
def test_host_names_are_parsed_strictly_in_open_mode(gw: ServeProcess, host: str) -> None:
    r = httpx.post(gw.v1 + "/chat/completions", json=_MSG, headers={"host": host})
    assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_web_page_cannot_use_an_open_gateway(gw: ServeProcess, fake_upstream: str, content_type: str) -> None:
    before = len(fake_stats(fake_upstream)["requests"])
    body = json.dumps(_MSG).encode()
    r = httpx.post(
        gw.v1 + "/chat/completions",
        content=body,
        headers={"content-type": content_type, "origin": "http://evil.example"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = httpx.post(gw.v1 + "/chat/completions", content=body, headers={"content-type": content_type})
    assert r.status_code == 415
    r = httpx.post(
        gw.v1 + "/chat/completions",
        content=body,
        headers={"content-type": "application/json", "host": "rebound.evil.example"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
    r = httpx.get(gw.url + "/v1/models", headers={"host": "rebound.evil.example:8000"})
    assert r.status_code == 403
    assert len(fake_stats(fake_upstream)["requests"]) == before
    ok = httpx.post(
        gw.v1 + "/chat/completions",
        content=body,
        headers={"content-type": "application/json", "host": "localhost:1234"},
    )
    assert ok.status_code == 200
