"""Leave one family out: each family is scored by an artifact trained without it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router.artifact import Artifact
from router.estimators import TierModels
from router.lofo import Family, leave_one_family_out


class CharEncoder:
    name, dim, inline = "chars", 2, True

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.array([[t.count("?"), len(t) % 5] for t in texts], np.float32)


def _file(path: Path, source: str, n: int) -> Path:
    rng = np.random.default_rng(len(source))
    with path.open("w") as fh:
        for i in range(n):
            weak = float(rng.random() < 0.5)
            outcomes = {"weak": {"score": weak, "cost_usd": 0.1}, "strong": {"score": 1.0, "cost_usd": 1.0}}
            fh.write(json.dumps({"id": f"{source}/{i}", "source": source, "prompt": "q?" * i, "outcomes": outcomes}))
            fh.write("\n")
    return path


def test_every_family_is_scored_by_an_artifact_that_never_saw_it(tmp_path: Path) -> None:
    a, b = _file(tmp_path / "a.jsonl", "task/a", 40), _file(tmp_path / "b.jsonl", "task/b", 40)
    chat, other = _file(tmp_path / "chat.jsonl", "chat", 30), _file(tmp_path / "c.jsonl", "other/c", 20)
    calls: list[tuple[tuple[str, ...], frozenset[str]]] = []

    def recipe(prefixes: tuple[str, ...], ids: frozenset[str], out: Path) -> Artifact:
        calls.append((prefixes, ids))
        w = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
        models = TierModels(["mid", "frontier"], w, np.zeros(2, np.float32), np.zeros_like(w), np.zeros(2, np.float32))
        return Artifact(models=models, encoder="chars", max_chars=1000)

    tiers = "mid=weak,frontier=strong"
    families = [
        Family("a", (a,), ("task/a",), tiers),
        Family("b", (b,), ("task/b",), tiers),
        Family("chat", (chat,), ("chat",), tiers, folds=3),
        Family("never trained on", (other,), ("other/",), tiers),
    ]
    trained_on = {"task/a", "task/b", "chat"}
    results = leave_one_family_out(recipe, trained_on, families, CharEncoder())

    assert [(r.family, r.trained_without, r.result.n) for r in results] == [
        ("a", "family", 40),
        ("b", "family", 40),
        ("chat", "fold", 30),
        ("never trained on", "", 20),
    ]
    assert calls[:2] == [(("task/a",), frozenset()), (("task/b",), frozenset())]
    folds = [ids for prefixes, ids in calls[2:5]]
    assert all(prefixes == () for prefixes, _ in calls[2:5]) and all(folds)
    assert sum(len(f) for f in folds) == 30 and frozenset().union(*folds) == {f"chat/{i}" for i in range(30)}
    assert calls[5:] == [((), frozenset())]  # one artifact on everything for the family it never trains on
