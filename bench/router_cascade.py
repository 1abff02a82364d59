"""Route alone vs route + escalate on a text-only check, replayed over recorded responses (issue #15).

    python bench/router_cascade.py [--artifact default] [--max-steps 1]

The checks are the gateway's own (``gateway.quality.checks.text_checks``): the ones a bare
recorded answer can fail, empty and refusal. The rest have nothing to look at in these files: no
request asks for JSON or tools, and no finish reason was recorded to show truncation.
Writes bench/out/cascade_<file>.json and .png and prints how often each check fires per tier.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from gateway.quality.checks import text_checks
from router.artifact import resolve_artifact
from router.cascade import cascade, check_failures, read_responses
from router.cli import offline
from router.core import Router, choose
from router.data import OutcomeSet, read_rows, tier_matrix
from router.evaluate import evaluate, print_table, select_tiers, write_png
from router.metrics import operating_point

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "routing"
RB = {"local": "mistralai/mistral-7b-chat", "mid": "mistralai/mixtral-8x7b-chat", "frontier": "gpt-4-1106-preview"}
CASES = [
    ("routerbench_dev.jsonl", RB, False),
    ("routerbench_train.jsonl", RB, False),
    ("arena_hard_train.jsonl", {"mid": "gpt-3.5-turbo-0125", "frontier": "gpt-4-0314"}, True),
]


def in_calls(data: OutcomeSet) -> OutcomeSet:
    """RouteLLM's convention for two tiers: cost counted in calls to the top tier."""
    calls = np.zeros_like(data.costs)
    calls[:, -1] = 1.0
    return OutcomeSet(data.rows, data.tiers, data.scores, calls, True, data.skipped, data.sources)


def run_case(router: Router, name: str, tiers: dict[str, str], calls: bool, steps: int, out: Path) -> dict[str, Any]:
    path = DATA / name
    data = tier_matrix(read_rows([path]), tiers)
    responses = read_responses(path, data, tiers)
    if calls:
        data = in_calls(data)
    failed, fired = check_failures(responses, text_checks)
    cols = select_tiers(router.tiers, data.tiers)
    feats = router.features([r.prompt for r in data.rows])
    q, c = router.score_features(feats)
    q, c = q[:, cols], c[:, cols]
    result = evaluate(data, feats, q, c, failed=failed, max_steps=steps)
    print(f"\n== {name}: tiers {tiers}; the gateway's checks, at most {steps} escalation(s)")
    for t, tier in enumerate(data.tiers):
        wrong = data.scores[:, t] < 0.5
        print(
            f"  {tier:<9} rejected {int(failed[:, t].sum()):>4} of {len(data.rows)} answers "
            f"({dict(fired[t]) or 'no check fired'}); of those scored wrong: {int((failed[:, t] & wrong).sum())}"
        )
    print_table(result)
    # At the artifact's own cost weight: what the cascade changes there.
    ref = float(data.costs[:, -1].sum())
    choice = choose(q, c, router.default_cost_weight)
    alone = operating_point(choice, data.scores, data.costs)
    served, paid = cascade(choice, failed, data.costs, steps)
    idx = np.arange(len(choice))
    with_cascade = (float(paid.sum()), float(data.scores[idx, served].mean()))
    escalated = int((served != choice).sum())
    print(
        f"  at cost weight {router.default_cost_weight:.3g}: route alone quality {alone[1]:.4f} cost {alone[0] / ref:.1%}; "
        f"with cascade {with_cascade[1]:.4f} cost {with_cascade[0] / ref:.1%} ({escalated} escalated)"
    )
    stem = Path(name).stem
    write_png(result, out / f"cascade_{stem}.png", title=f"{name}: route alone vs route + the gateway's checks")
    metrics = {r.name: r.metrics for r in result.routers}
    return {
        "file": name,
        "tiers": tiers,
        "cost_unit": result.cost_unit,
        "rows": len(data.rows),
        "max_steps": steps,
        "rejected": {t: int(failed[:, i].sum()) for i, t in enumerate(data.tiers)},
        "fired": {t: dict(fired[i]) for i, t in enumerate(data.tiers)},
        "rejected_and_wrong": {
            t: int((failed[:, i] & (data.scores[:, i] < 0.5)).sum()) for i, t in enumerate(data.tiers)
        },
        "route_alone": metrics["tierwise"],
        "route_cascade": metrics["tierwise+cascade"],
        "at_default_weight": {
            "cost_weight": router.default_cost_weight,
            "route_alone": {"quality": alone[1], "cost": alone[0] / ref},
            "route_cascade": {"quality": with_cascade[1], "cost": with_cascade[0] / ref, "escalated": escalated},
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default="default")
    p.add_argument("--max-steps", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = p.parse_args()
    offline()
    router = Router.load(resolve_artifact(args.artifact))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, tiers, calls in CASES:
        res = run_case(router, name, tiers, calls, args.max_steps, out)
        res["artifact"] = router.version
        (out / f"cascade_{Path(name).stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):
        raise SystemExit(main())
