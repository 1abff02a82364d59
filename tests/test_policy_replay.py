"""``tierwise policy replay``: a candidate policy's cost and judged quality over the traffic a real
gateway judged (fake tiers whose answer quality the fake judge knows, a real SQLite ledger)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli import main
from gateway.ledger import create_schema, make_engine
from router import Router, default_artifact_dir
from tests.conftest import REPO, Gateway, GatewayFactory

EASY = ["Say hello to the team", "What is two plus two", "Name a colour", "Thank you!", "Write a short greeting"]
HARD = [
    "hard: prove the theorem about primes",
    "hard: design a distributed consensus protocol",
    "hard: derive the gradient of attention",
    "hard: optimise this compiler pass",
    "hard: find the bug in this lock-free queue",
]


def _policy(
    fake: str, cost_weight: float, rate: float = 1.0, tiers: tuple[str, ...] = ("local", "mid", "frontier")
) -> str:
    deps = {
        "local": ("skill-0", "{input_per_1m: 0, output_per_1m: 0}"),
        "mid": ("skill-1", "{input_per_1m: 0.15, output_per_1m: 0.6}"),
        "frontier": ("skill-2", "{input_per_1m: 2.5, output_per_1m: 10}"),
    }
    tier_yaml = "".join(
        f"""
  - name: {t}
    deployments: [{{name: {t}-d, model: openai/{deps[t][0]}, api_base: "{fake}/v1", max_retries: 0, price: {deps[t][1]}}}]"""
        for t in tiers
    )
    return f"""version: 1
tiers:{tier_yaml}
routes:
  - {{name: auto, auto: true, tier: {tiers[0]}}}
router: {{artifact: default, cost_weight: {cost_weight}}}
quality:
  sample_rate: {rate}
  queue_size: 1000
  judge: {{name: the-judge, model: openai/judge, api_base: "{fake}/v1", max_retries: 0, price: {{input_per_1m: 0.1, output_per_1m: 0.1}}}}
"""


def _rows(
    gw: Gateway, table: str, wait_for: int, timeout_s: float = 30, until: str | None = None
) -> list[dict[str, Any]]:
    """The table's rows once it has ``wait_for`` of them (or a row of request ``until``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        con = sqlite3.connect(gw.db_path)
        con.row_factory = sqlite3.Row
        try:
            rows = [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY id")]
        except sqlite3.OperationalError:
            rows = []
        finally:
            con.close()
        done = any(r.get("request_id") == until for r in rows) if until else len(rows) >= wait_for
        if done or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _ask(gw: Gateway, model: str, text: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    r = httpx.post(gw.v1 + "/chat/completions", json=body, timeout=30)
    assert r.status_code == 200
    return r.headers["x-tierwise-request-id"]


def _reload(gw: Gateway, policy: str, snapshots: int) -> None:
    gw.policy_path.write_text(policy)
    assert len(_rows(gw, "policy_snapshots", wait_for=snapshots)) == snapshots  # the gateway runs it


def _env(gw: Gateway) -> dict[str, str]:
    return {"TIERWISE_DATABASE_URL": f"sqlite:///{gw.db_path}", "TIERWISE_POLICY_PATH": str(gw.policy_path)}


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.load(default_artifact_dir())


@pytest.fixture
def judged_gateway(start_gateway: GatewayFactory, fake_upstream: str, router: Router) -> Gateway:
    """Auto-routed traffic judged at a sample rate of 1, then at 0.5 (the policy reloaded), and a
    few requests pinned to the local tier. At cost weight 0.02 the router sends about 2 in 3 of
    these prompts to the frontier tier, the rest to mid."""
    gw = start_gateway(_policy(fake_upstream, cost_weight=0.02), router=router)
    texts = [f"{t} #{i}" for i, t in enumerate(EASY + HARD)]
    for text in texts:
        _ask(gw, "auto", text)
    for text in EASY[:3] + HARD[:2]:
        _ask(gw, "tier/local", text)
    _rows(gw, "judgements", wait_for=len(texts) + 5)
    _reload(gw, _policy(fake_upstream, cost_weight=0.02, rate=0.5), snapshots=2)
    for text in texts * 2:
        _ask(gw, "auto", text)
    # One request sampled for sure, judged after every sample queued before it: then all are in.
    _reload(gw, _policy(fake_upstream, cost_weight=0.02), snapshots=3)
    last = _ask(gw, "auto", "Name a colour #last")
    assert any(j["request_id"] == last for j in _rows(gw, "judgements", wait_for=0, until=last))
    return gw


def _cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "replay", *args],
        cwd=REPO,
        env={**os.environ, **_env(gw)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_costlier_weight_replayed_cheaper_with_its_judged_quality(judged_gateway: Gateway, tmp_path: Path) -> None:
    gw = judged_gateway
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(gw.policy_path.read_text().replace("cost_weight: 0.02", "cost_weight: 10.0"))
    png, out = tmp_path / "replay.png", tmp_path / "replay.json"
    done = _cli(gw, "--candidate", str(candidate), "--since", "1h", "--png", str(png), "--json", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    for row in ("cost / 1k requests", "saved vs all-frontier", "quality vs frontier", "n judged", "n unknown"):
        assert row in lines, done.stdout
    assert "±" in lines["quality vs frontier"] and "candidate.yaml" in lines["policy"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads(out.read_text())
    current, cheaper = report["policies"]
    assert report["sample_rates"] == [0.5, 1.0] and report["reference"] == ["frontier"]
    # The current policy replayed is what was served, each judged request weighted by 1 / its rate.
    judged = _rows(gw, "judgements", wait_for=0)
    weight = {t: sum(1 / j["sample_rate"] for j in judged if j["served_tier"] == t) for t in current["shares"]}
    assert current["shares"] == pytest.approx({t: w / sum(weight.values()) for t, w in weight.items()})
    assert report["replayed"] == len(judged) and current["unknown"] == 0
    # The dearer cost weight sends more to the cheaper tiers, costs less, and is judged no better;
    # what it sends to the local tier was never judged there: unknown, counted, not guessed.
    assert cheaper["shares"]["frontier"] < current["shares"]["frontier"]
    assert cheaper["shares"]["local"] > current["shares"]["local"]
    assert cheaper["cost_per_1k"]["mean"] < current["cost_per_1k"]["mean"]
    assert cheaper["saved"]["mean"] > current["saved"]["mean"]
    q, cq = current["quality"], cheaper["quality"]
    assert cq["mean"] <= q["mean"] and cq["low"] < cq["mean"] < cq["high"]
    assert cheaper["unknown"] > 0 and cheaper["judged"] + cheaper["unknown"] == report["replayed"]
    assert cheaper["quality_bounds"][0] <= cq["mean"] <= cheaper["quality_bounds"][1]
    assert lines["n unknown"].split()[-1] == str(cheaper["unknown"])


def test_replay_says_what_is_wrong(
    judged_gateway: Gateway,
    fake_upstream: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in _env(judged_gateway).items():
        monkeypatch.setenv(name, value)

    def replay(*args: str) -> tuple[int, str]:
        code = main(["policy", "replay", *args])
        captured = capsys.readouterr()
        return code, captured.err

    bad = tmp_path / "bad.yaml"
    bad.write_text(_policy(fake_upstream, 1.0).replace("cost_weight: 1.0", "cost_weight: 1.0, colour: red"))
    assert replay("--candidate", str(bad)) == (
        1,
        f"{bad}: router.colour: unknown key (not part of the policy schema)\n",
    )
    two = tmp_path / "two-tiers.yaml"
    two.write_text(_policy(fake_upstream, 1.0, tiers=("local", "frontier")))
    code, err = replay("--candidate", str(two))
    assert (
        code == 1
        and f"{two}: tiers ['local', 'frontier'] do not match the current policy's ['local', 'mid', 'frontier']" in err
    )
    code, err = replay("--artifact", "minilm")
    assert (
        code == 1
        and "(minilm, cost weight 0.02) reads embeddings of minilm-l6-v2-onnx-int8-t64, the judged samples hold static-minilm-l6-v2"
        in err
    )
    assert replay() == (2, "tierwise policy replay: give --candidate FILE, --artifact DIR or both\n")

    # The same artifact again is the same policy: the same figures.
    out = tmp_path / "same.json"
    assert replay("--artifact", "default", "--json", str(out))[0] == 0
    current, same = json.loads(out.read_text())["policies"]
    assert same["cost_per_1k"] == current["cost_per_1k"] and same["quality"] == current["quality"]

    empty = tmp_path / "empty.db"
    create_schema(make_engine(f"sqlite:///{empty}"))
    monkeypatch.setenv("TIERWISE_DATABASE_URL", f"sqlite:///{empty}")
    code, err = replay("--artifact", "default", "--since", "7d")
    assert (code, err) == (
        1,
        "no judged samples in the ledger since 7d: set quality.sample_rate and a judge in the policy, "
        "and let traffic through\n",
    )


def test_error_bars_are_never_negative_at_100_percent() -> None:
    """policy replay --png crashed ('yerr' must not contain negative values) when quality was 100%."""
    from gateway.quality.replay import Interval
    from gateway.quality.replay.report import error_bars
    from gateway.quality.stats import Estimate

    assert error_bars(Estimate(1.0000000000000002, 0.92, 1.0, 30, 30.0), 100) == [[pytest.approx(8.0)], [0.0]]
    assert error_bars(Interval(0.5, 0.4, 0.7)) == [[pytest.approx(0.1)], [pytest.approx(0.2)]]
