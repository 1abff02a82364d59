"""The conversational check (router/checks/conversational.jsonl) for each shipped artifact, priced
as policies/default.yaml prices its tiers (local free, mid gpt-4o-mini, frontier gpt-4o).

    python bench/router_conversational.py [--artifacts fast default minilm] [--policy policies/default.yaml]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from gateway.policy.loader import load_policy  # noqa: E402
from gateway.routing.resolve import price_scale  # noqa: E402
from router import Router  # noqa: E402
from router.artifact import resolve_artifact  # noqa: E402
from router.checks.conversational import judge  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifacts", nargs="+", default=["default", "minilm", "two-stage"])
    ap.add_argument("--policy", default=str(REPO / "policies" / "default.yaml"))
    args = ap.parse_args()
    loaded = load_policy(Path(args.policy))
    for name in args.artifacts:
        router = Router.load(resolve_artifact(name))
        report = judge(router, price_scale(router, loaded))
        print(f"{name:<10} {report.line()}")
        for prompt in report.easy_to_frontier:
            print(f"           easy prompt sent to the frontier: {prompt!r}")


if __name__ == "__main__":
    main()
