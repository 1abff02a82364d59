"""Short conversational prompts, labelled by hand: ``easy`` ones ("Thanks!", "What is 2+2?",
"Write a haiku about autumn") must never go to the frontier tier; ``hard`` ones (proofs,
concurrent code, systems diagnosis) should be preferred for it over the easy ones.

The outcome files hold benchmark questions and hard chat prompts, none of this traffic; this
list is small and its labels are judgements, so it is a guard rail, not a score to tune on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.core import Decision, Router

__all__ = ["ConversationalReport", "judge", "load_prompts"]

PROMPTS = Path(__file__).resolve().parent / "conversational.jsonl"


def load_prompts(path: Path = PROMPTS) -> list[tuple[str, str]]:
    """(prompt, label) pairs; label is ``easy`` or ``hard``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(str(r["prompt"]), str(r["label"])) for r in rows]


@dataclass(frozen=True)
class ConversationalReport:
    easy_to_frontier: list[str]  # easy prompts the router sends to the top tier (should be none)
    tiers_easy: dict[str, int]
    tiers_hard: dict[str, int]
    ranking_auc: float  # P(a hard prompt's frontier preference beats an easy one's)

    def line(self) -> str:
        return (
            f"easy->frontier {len(self.easy_to_frontier)}/{sum(self.tiers_easy.values())}; "
            f"easy {self.tiers_easy}; hard {self.tiers_hard}; hard-over-easy AUC {self.ranking_auc:.2f}"
        )


def judge(
    router: Router, cost_scale: Sequence[float] | None = None, cost_weight: float | None = None
) -> ConversationalReport:
    """Decisions as the gateway makes them (``cost_scale`` from the policy's prices)."""
    prompts = load_prompts()
    decisions = [router.decide(p, cost_scale=cost_scale, cost_weight=cost_weight) for p, _ in prompts]
    tiers, top = router.tiers, router.tiers[-1]

    def weight(d: Decision) -> float:
        stage = router.first_stage if d.stage == 1 and router.first_stage is not None else router
        return stage.default_cost_weight if cost_weight is None else cost_weight

    # The frontier's utility over the best other tier, from the (policy-priced) figures decided on.
    pref = np.array(
        [
            d.scores[top] - weight(d) * d.costs[top] - max(d.scores[t] - weight(d) * d.costs[t] for t in tiers[:-1])
            for d in decisions
        ]
    )
    hard = np.array([label == "hard" for _, label in prompts])
    pairs = pref[hard][:, None] - pref[~hard][None, :]

    def count(mask: np.ndarray) -> dict[str, int]:
        return {t: sum(d.tier == t for d, m in zip(decisions, mask, strict=True) if m) for t in tiers}

    return ConversationalReport(
        easy_to_frontier=[p for (p, _), d, h in zip(prompts, decisions, hard, strict=True) if not h and d.tier == top],
        tiers_easy=count(~hard),
        tiers_hard=count(hard),
        ranking_auc=float(np.mean((pairs > 0) + 0.5 * (pairs == 0))),
    )
