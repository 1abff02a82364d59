"""Two-stage decisions: the static router decides when its choice is clear, MiniLM the rest."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from router import ArtifactError, Router, default_artifact_dir
from router.checks.conversational import load_prompts
from router.core import choose, choose_two_stage, two_stage_preference
from router.data import OutcomeSet, Row
from router.evaluate import evaluate

SHIPPED = default_artifact_dir().parent
PROMPTS = [p for p, _ in load_prompts()] + [
    "Which of these is a renewable resource?\nA) coal\nB) wind\nC) oil\nD) natural gas\nAnswer:",
    "Write a Python function that merges overlapping intervals.",
    "Summarise the causes of the First World War in 200 words.",
]


@pytest.fixture(scope="module")
def stages() -> tuple[Router, Router]:
    return Router.load(SHIPPED / "default"), Router.load(SHIPPED / "minilm")


def two_stage(stages: tuple[Router, Router], margin: float) -> Router:
    fast, minilm = stages
    return Router(minilm.artifact, minilm.encoder, first_stage=fast, margin=margin)


def test_the_margin_splits_prompts_between_the_stages(stages: tuple[Router, Router]) -> None:
    fast, minilm = stages
    assert [two_stage(stages, 0.0).decide(p).tier for p in PROMPTS] == [fast.decide(p).tier for p in PROMPTS]
    assert [two_stage(stages, math.inf).decide(p).tier for p in PROMPTS] == [minilm.decide(p).tier for p in PROMPTS]
    router = two_stage(stages, 0.03)
    for p in PROMPTS:
        first = fast.decide(p)
        got = router.decide(p)
        expected = first if first.margin >= 0.03 else minilm.decide(p)
        assert (got.tier, got.scores, got.stage) == (expected.tier, expected.scores, 1 if first.margin >= 0.03 else 2)
        assert got.version == router.version


def test_a_clear_first_stage_decides_inline_without_the_transformer(stages: tuple[Router, Router]) -> None:
    fast, _ = stages
    router = two_stage(stages, 0.03)
    by_margin = sorted(PROMPTS, key=lambda p: fast.decide(p).margin)
    unsure, sure = by_margin[0], by_margin[-1]
    assert fast.decide(unsure).margin < 0.03 <= fast.decide(sure).margin
    assert router.decides_inline(sure) and not router.decides_inline(unsure)
    router.decide(sure)
    assert not router._cache  # the second stage never embedded the clear prompt
    router.decide(unsure)
    assert router.decides_inline(unsure)  # now cached
    # The gateway passes the policy's prices: the inline check uses the latest ones.
    router.decide(sure, cost_scale=[0.0, 1.0, 1.0])
    assert router._last_terms == (None, [0.0, 1.0, 1.0])


def test_the_shipped_two_stage_artifact_pins_its_first_stage(tmp_path: Path) -> None:
    two = Router.load(SHIPPED / "two-stage")
    assert two.first_stage is not None and two.margin == 0.03
    # built from the shipped static default and the shipped MiniLM recipe
    default, minilm = Router.load(default_artifact_dir()), Router.load(SHIPPED / "minilm")
    assert two.first_stage.artifact.meta["model_sha256"] == default.artifact.meta["model_sha256"]
    assert two.artifact.meta["model_sha256"] == minilm.artifact.meta["model_sha256"]
    copy = tmp_path / "two-stage"
    shutil.copytree(SHIPPED / "two-stage", copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["first_stage"]["model_sha256"] = "0" * 64  # a first stage swapped without rebuilding
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="first stage"):
        Router.load(copy)


def test_the_two_stage_rule_row_wise_is_the_routers_and_ranks_like_a_single_stage() -> None:
    """`choose_two_stage` is `Router.decide`'s rule over many rows, and for two tiers the closed
    form `two_stage_preference` reproduces its choice at every weight (what APGR/CPT rank by)."""
    rng = np.random.default_rng(0)
    n = 400
    first = (rng.random((n, 2), dtype=np.float32), np.sort(rng.random((n, 2), dtype=np.float32), axis=1))
    second = (rng.random((n, 2), dtype=np.float32), np.sort(rng.random((n, 2), dtype=np.float32), axis=1))
    pref = two_stage_preference(first, second, margin=0.1)
    for w in [0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 50.0]:
        served = choose_two_stage(first, second, w, 0.1)
        assert np.array_equal(served == 1, pref > w), w
        alone = choose(*second, w)
        if 0.2 <= w <= 2.0:
            assert not np.array_equal(served, alone)  # the first stage decides some rows itself


def test_router_eval_scores_what_a_two_stage_router_serves() -> None:
    """`router eval --artifact two-stage` printed exactly the second stage's figures: it scored the
    second stage's predictions for every row. Here the first stage is always sure and always right,
    and the second always wrong, so only an evaluation of the real decisions finds the good router."""
    n = 200
    rng = np.random.default_rng(1)
    hard = rng.random(n) < 0.5
    scores = np.stack([np.where(hard, 0.0, 1.0), np.ones(n)], axis=1)  # the weak tier fails the hard rows
    costs = np.tile([0.1, 1.0], (n, 1))
    data = OutcomeSet(
        rows=[Row(str(i), "synthetic", f"p{i}", {}, {}) for i in range(n)],
        tiers=["weak", "strong"],
        scores=scores,
        costs=costs,
        cost_in_calls=False,
        sources=["synthetic"] * n,
    )
    right = np.stack([np.where(hard, 0.0, 1.0), np.ones(n)], axis=1).astype(np.float32)
    wrong = np.stack([np.where(hard, 1.0, 0.0), np.ones(n)], axis=1).astype(np.float32)
    cost = costs.astype(np.float32)
    feats = rng.random((n, 4), dtype=np.float32)
    alone = evaluate(data, feats, wrong, cost)
    served = evaluate(data, feats, wrong, cost, first_stage=(right, cost), margin=0.0)
    mine = {c.name: c.metrics for c in served.routers}["tierwise"]
    theirs = {c.name: c.metrics for c in alone.routers}["tierwise"]
    assert mine["cost_at_95"] is not None and mine["cost_at_95"] < 0.7  # hard rows strong, easy rows weak
    assert theirs["cost_at_95"] is None or theirs["cost_at_95"] > mine["cost_at_95"] + 0.2
    assert mine["apgr"] is not None and theirs["apgr"] is not None and mine["apgr"] > theirs["apgr"] + 0.3
