"""Short conversational prompts under the policies' prices: "Thanks!", "What is 2+2?" and "write
a haiku" never go to the frontier; hard requests rank above easy ones for it."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from gateway.policy.loader import load_policy
from gateway.routing.resolve import price_scale
from router import Router
from router.artifact import resolve_artifact
from router.checks.conversational import judge, load_prompts
from tests.conftest import REPO


@functools.cache
def shipped(name: str) -> Router:
    return Router.load(resolve_artifact(name))


def test_the_list_holds_the_readmes_examples() -> None:
    easy = {p for p, label in load_prompts() if label == "easy"}
    assert {"Thanks!", "What is 2+2?", "Write a haiku about autumn"} <= easy


@pytest.mark.parametrize("artifact", ["default", "minilm", "two-stage"])
@pytest.mark.parametrize("policy", ["default.yaml", "fake.yaml"])
def test_easy_prompts_never_reach_the_frontier(artifact: str, policy: str) -> None:
    router = shipped(artifact)
    report = judge(router, price_scale(router, load_policy(REPO / "policies" / policy)))
    assert report.easy_to_frontier == [], report.line()
    # Hard requests are preferred for the frontier over easy ones (measured 0.88-0.94: bench/README.md).
    assert report.ranking_auc >= 0.8, report.line()


def test_the_check_runs_from_a_script(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "bench/router_conversational.py", "--artifacts", "default"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("default") and "easy->frontier 0/" in out.stdout
