"""Two-stage decisions: the static router decides when its choice is clear, MiniLM the rest."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from router import ArtifactError, Router, default_artifact_dir
from router.checks.conversational import load_prompts

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
