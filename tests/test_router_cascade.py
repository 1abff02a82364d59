"""Route, then escalate on a failed check: replayed over recorded responses, answers known exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from router.cascade import cascade, check_failures, read_responses
from router.data import read_rows, tier_matrix
from router.evaluate import evaluate

TIERS = {"weak": "small-model", "strong": "big-model"}


def _empty_or_refusal(text: str) -> Sequence[str]:
    failed = []
    if not text.strip():
        failed.append("empty")
    if text.startswith("I'm sorry"):
        failed.append("refusal")
    return failed


def _write(path: Path) -> None:
    # weak: right, empty (wrong), wrong but well-formed, refuses (right per the score); strong: always right
    weak = [("['4']", 1.0), ("['']", 0.0), ("['5']", 0.0), ("I'm sorry, but I can't", 1.0)]
    with path.open("w") as fh:
        for i, (text, score) in enumerate(weak):
            outcomes = {
                "small-model": {"score": score, "cost_usd": 1.0, "response": text},
                "big-model": {"score": 1.0, "cost_usd": 10.0, "response": None if i == 3 else "4"},
            }
            fh.write(json.dumps({"id": f"r{i}", "source": "t", "prompt": f"q{i}", "outcomes": outcomes}) + "\n")


def test_cascade_curve_beside_route_alone(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    _write(path)
    data = tier_matrix(read_rows([path]), TIERS)
    responses = read_responses(path, data, TIERS)
    assert responses[0] == ["4", "4"] and responses[1][0] == "" and responses[3][1] is None
    failed, fired = check_failures(responses, _empty_or_refusal)
    assert failed.tolist() == [[False, False], [True, False], [False, False], [True, False]]
    assert fired[0] == {"empty": 1, "refusal": 1} and not fired[1]  # an unrecorded answer is accepted

    # predicted: weak is likely fine everywhere, strong certain; strong costs 10x
    quality = np.array([[0.9, 1.0], [0.8, 1.0], [0.7, 1.0], [0.95, 1.0]], np.float32)
    cost = np.array([[0.1, 1.0]] * 4, np.float32)
    result = evaluate(data, np.zeros((4, 2), np.float32), quality, cost, failed=failed)
    curves = {r.name: r.points for r in result.routers}
    # all to weak: route alone serves 2 right answers for 4 of 40; the cascade escalates rows 1 and 3
    # (paying both calls) and serves 3 right answers for 4 + 20 of 40 (row 3's refusal scored right)
    assert (0.1, 0.5) in curves["tierwise"] and (pytest.approx(0.6), 0.75) in curves["tierwise+cascade"]
    assert (1.0, 1.0) in curves["tierwise"] and (1.0, 1.0) in curves["tierwise+cascade"]
    assert len(curves["tierwise+cascade"]) == len(curves["tierwise"])  # the same sweep of weights


def test_escalation_climbs_one_tier_a_step_and_pays_every_call() -> None:
    costs = np.array([[1.0, 3.0, 10.0]] * 3)
    failed = np.array([[True, True, True], [True, False, False], [False, True, False]])
    choice = np.array([0, 0, 1])
    served, paid = cascade(choice, failed, costs, max_steps=1)
    assert served.tolist() == [1, 1, 2] and paid.tolist() == [4.0, 4.0, 13.0]
    served, paid = cascade(choice, failed, costs, max_steps=2)
    assert served.tolist() == [2, 1, 2] and paid.tolist() == [14.0, 4.0, 13.0]  # the top tier is always served
    served, paid = cascade(choice, failed, costs, max_steps=0)
    assert served.tolist() == choice.tolist() and paid.tolist() == [1.0, 1.0, 3.0]
