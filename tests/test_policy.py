"""Policy files: path-named errors, price resolution, the CLI check, live reload."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from gateway.policy import PolicyError, load_policy
from gateway.policy.loader import parse_policy
from tests.conftest import REPO, GatewayFactory, fake_stats, free_port, three_tier_policy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(write(tmp_path, text))
    return str(info.value)


def test_shipped_policies_are_valid() -> None:
    for path in sorted((REPO / "policies").rglob("*.yaml")):
        if path.name == "bad.yaml":  # the README's rejected example: test_readme_policy_check_example
            continue
        loaded = load_policy(path)
        assert loaded.policy.tiers, path


def test_readme_policy_check_example_prints_the_readme_error_line() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    command = "$ tierwise policy check policies/bad.yaml"
    expected = readme[readme.index(command) + 1]
    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "check", "policies/bad.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip() == expected


def test_unknown_key_is_named_with_file_and_path(tmp_path: Path) -> None:
    msg = problems(
        tmp_path,
        """
        tiers:
          - name: a
            deployments: [{name: d, model: openai/x, api_base: "http://127.0.0.1:1/v1", price: {input_per_1m: 0, output_per_1m: 0}}]
          - name: b
            deployments:
              - {name: e, model: openai/y, api_base: "http://127.0.0.1:1/v1", colour: blue, price: {input_per_1m: 0, output_per_1m: 0}}
        routes: [{name: r, tier: a}]
        """,
    )
    assert f"{tmp_path / 'p.yaml'}: tiers[1].deployments[0].colour: unknown key" in msg


def test_bad_value_and_missing_field(tmp_path: Path) -> None:
    msg = problems(
        tmp_path,
        """
        tiers:
          - name: a
            deployments: [{name: d, api_base: "http://x/v1", timeout_s: -1, price: {input_per_1m: 0, output_per_1m: 0}}]
        routes: [{name: r, tier: a}]
        """,
    )
    assert "tiers[0].deployments[0].model: Field required" in msg
    assert "tiers[0].deployments[0].timeout_s: Input should be greater than 0" in msg


def test_price_unknown_to_litellm_must_be_set(tmp_path: Path) -> None:
    base = """
    tiers:
      - name: a
        deployments: [{name: d, model: anthropic/claude-3-5-haiku, api_key_env: ANTHROPIC_API_KEY%s}]
    routes: [{name: r, tier: a}]
    """
    msg = problems(tmp_path, base % "")
    assert "tiers[0].deployments[0].price: no known price for model 'anthropic/claude-3-5-haiku'" in msg
    loaded = load_policy(write(tmp_path, base % ", price: {input_per_1m: 0.8, output_per_1m: 4}"))
    assert loaded.price("d").output_per_1m == 4
    # a model litellm's bundled map knows needs no override
    known = load_policy(write(tmp_path, (base % "").replace("claude-3-5-haiku", "claude-haiku-4-5")))
    assert known.price("d").input_per_1m == pytest.approx(1.0)


def test_routes_must_name_existing_tiers(tmp_path: Path) -> None:
    msg = problems(
        tmp_path,
        """
        tiers:
          - name: a
            deployments: [{name: d, model: fake/echo, price: {input_per_1m: 0, output_per_1m: 0}}]
        routes: [{name: r, tier: nowhere}]
        """,
    )
    assert "route 'r' names unknown tier 'nowhere'" in msg


def test_cli_policy_check(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "check", "policies/fake.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "fake-frontier" in ok.stdout and "warning" not in ok.stdout
    keyed = write(tmp_path, (REPO / "policies" / "default.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    unset = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "check", str(keyed)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert unset.returncode == 0 and "warning: " in unset.stdout and "(OPENAI_API_KEY)" in unset.stdout, unset.stdout
    bad = write(tmp_path, "tiers: []\nroutes: []\n")
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "check", str(bad)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 1 and f"{bad}: tiers: List should have at least 1 item" in out.stderr


def test_policy_check_loads_the_router_artifact_the_gateway_would(tmp_path: Path) -> None:
    """`router adapt` once printed a path relative to the working directory: `policy check` said
    OK and `tierwise serve` exited with a traceback. The artifact is read relative to the policy."""
    text = (REPO / "policies" / "default.yaml").read_text()
    assert "router:" in text
    moved = tmp_path / "elsewhere" / "policy.yaml"
    moved.parent.mkdir()
    moved.write_text(text.replace("artifact: default", "artifact: adapted"))
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "check", str(moved)], cwd=REPO, capture_output=True, text=True
    )
    where = moved.parent / "adapted"
    assert out.returncode == 1 and f"router.artifact 'adapted' (read as {where})" in out.stderr, out.stderr
    assert "not a router artifact" in out.stderr


def test_policy_check_shows_cache_prices_and_says_which_are_unknown(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        """
        version: 1
        tiers:
          - name: mid
            deployments:
              - {name: mini, model: openai/gpt-4o-mini}
              - {name: own, model: openai/custom, api_base: "http://127.0.0.1:1/v1",
                 price: {input_per_1m: 1, output_per_1m: 2}}
              - {name: own-cached, model: openai/custom, api_base: "http://127.0.0.1:1/v1",
                 price: {input_per_1m: 1, output_per_1m: 2, cached_input_per_1m: 0.1}}
          - name: frontier
            deployments:
              - {name: claude, model: anthropic/claude-sonnet-4-5}
        routes: [{name: cheap, tier: mid}]
        """,
    )
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "check", str(policy)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split()[1]: line for line in out.stdout.splitlines()[1:] if not line.strip().startswith("note")}
    assert "$0.075 cache read" in lines["mini"] and "$0.1 cache read" in lines["own-cached"]
    assert "$0.3 cache read, $3.75 cache write" in lines["claude"]
    assert "note: own: no cache-read price known" in out.stdout  # the only one priced at the input rate


def test_invalid_reload_keeps_old_policy_valid_reload_applies(
    start_gateway: GatewayFactory, fake_upstream: str
) -> None:
    gw = start_gateway(three_tier_policy(fake_upstream))
    body = {"model": "cheap", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(gw.v1 + "/chat/completions", json=body).status_code == 200

    gw.policy_path.write_text("tiers: [ {name: broken\n")  # invalid YAML
    deadline = time.monotonic() + 10  # the next poll reads the file and rejects it
    while not any("last policy reload was rejected" in d for d in httpx.get(gw.url + "/readyz").json()["degraded"]):
        assert time.monotonic() < deadline, "the invalid policy was never read"
        time.sleep(0.05)
    r = httpx.post(gw.v1 + "/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-tierwise-tier"] == "local"

    new = three_tier_policy(fake_upstream).replace("{name: cheap, tier: local}", "{name: cheap, tier: frontier}")
    gw.policy_path.write_text(textwrap.dedent(new))
    deadline = time.time() + 5
    while time.time() < deadline:
        r = httpx.post(gw.v1 + "/chat/completions", json=body)
        if r.headers["x-tierwise-tier"] == "frontier":
            break
        time.sleep(0.1)
    assert r.headers["x-tierwise-tier"] == "frontier"
    assert httpx.get(gw.url + "/readyz").json()["degraded"] == []


def test_reload_does_not_drop_in_flight_requests(start_gateway: GatewayFactory, fake_upstream: str) -> None:
    """The reload lands while four requests wait on the old policy's slow deployment: they are
    answered by it, and the next request sees the new policy."""
    gw = start_gateway(three_tier_policy(fake_upstream, local="slow-3000"))
    body = {"model": "cheap", "messages": [{"role": "user", "content": "x"}]}
    before = fake_stats(fake_upstream)["calls"].get("slow-3000", 0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(httpx.post, gw.v1 + "/chat/completions", json=body, timeout=15) for _ in range(4)]
        for _ in range(200):  # all four have reached the slow upstream
            if fake_stats(fake_upstream)["calls"].get("slow-3000", 0) >= before + 4:
                break
            time.sleep(0.01)
        route = "- {name: cheap, tier: local}"
        new = three_tier_policy(fake_upstream, local="echo").replace(
            route, route + "\n      - {name: after-reload, tier: mid}"
        )
        gw.policy_path.write_text(textwrap.dedent(new))
        for _ in range(200):  # the new policy's route is listed once the reload has landed
            if "after-reload" in httpx.get(gw.v1 + "/models").text:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the policy was not reloaded")
        assert not any(f.done() for f in futures), "the reload must land while the four are in flight"
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 4
    assert {r.json()["model"] for r in results} == {"slow-3000"}  # the deployment they were sent to
    after = httpx.post(gw.v1 + "/chat/completions", json=body, timeout=15)
    assert after.status_code == 200 and after.json()["model"] == "echo"


def test_sighup_reloads(tmp_path: Path, fake_upstream: str) -> None:
    """A real `tierwise serve` process: SIGHUP re-reads the policy."""
    policy = write(tmp_path, three_tier_policy(fake_upstream))
    env = {
        **os.environ,
        "TIERWISE_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}",
        "TIERWISE_POLICY_POLL_INTERVAL_S": "3600",
    }
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--policy", str(policy), "--port", str(port), "--no-router"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        body = {"model": "cheap", "messages": [{"role": "user", "content": "x"}]}
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.post(url + "/v1/chat/completions", json=body).headers["x-tierwise-tier"] == "local"
        policy.write_text(
            textwrap.dedent(
                three_tier_policy(fake_upstream).replace("{name: cheap, tier: local}", "{name: cheap, tier: mid}")
            )
        )
        proc.send_signal(signal.SIGHUP)
        tiers = []  # polling is off (an hour): only the signal can make it mid
        for _ in range(100):
            tiers.append(httpx.post(url + "/v1/chat/completions", json=body).headers["x-tierwise-tier"])
            if tiers[-1] == "mid":
                break
            time.sleep(0.05)
        assert tiers[-1] == "mid", tiers
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_typod_key_does_not_hide_the_checks_across_sections() -> None:
    """`policy check` showed one layer at a time: the unknown key, and only once that was fixed,
    the route naming a tier that does not exist."""
    text = """
version: 1
tiers:
  - name: local
    deployments:
      - {name: a, model: fake/echo, colour: blue, price: {input_per_1m: 0, output_per_1m: 0}}
routes:
  - {name: cheap, tier: nowhere}
"""
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "p.yaml")
    assert str(err.value).splitlines() == [
        "p.yaml: tiers[0].deployments[0].colour: unknown key (not part of the policy schema)",
        "p.yaml: route 'cheap' names unknown tier 'nowhere' (tiers: ['local'])",
    ]
    # another kind of structural error still stops there (the rest cannot be checked reliably)
    with pytest.raises(PolicyError) as err:
        parse_policy(text.replace("colour: blue", "timeout_s: -1"), "p.yaml")
    assert len(str(err.value).splitlines()) == 1
