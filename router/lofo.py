"""Leave one family out: a training recipe judged on whole data families it was not trained on.

In-family k-fold (random rows of the same tasks) calls recipes level that held-out data tells
apart: the router meets tasks, subjects and chat topics it has never seen. Here each family
(a RouterBench task, a group of MMLU subjects, the open-model sets, the chat sets) is removed
from the recipe's training data, the recipe is trained on the rest, and the family is scored
like ``router eval``. Families the recipe never trains on (Arena-Hard, the held-out MMLU
subjects, the chat set when the recipe leaves it out) are scored by one artifact trained on
everything the recipe uses. A family with ``folds`` is the exception where the question is what
its own rows teach about new prompts of its kind (the chat set: the only chat outcomes of the
tiers' models): a recipe that trains on it is judged on each fold by an artifact trained
without that fold, predictions pooled.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.artifact import Artifact
from router.core import Router
from router.data import Row, parse_tiers, read_rows, tier_matrix
from router.encoders import Encoder
from router.evaluate import EvalResult, evaluate, select_tiers

__all__ = ["Family", "FamilyResult", "Recipe", "headline", "leave_one_family_out", "mmlu_groups"]


@dataclass(frozen=True)
class Family:
    name: str
    files: tuple[Path, ...]  # where its rows are
    prefixes: tuple[str, ...]  # its rows: sources starting with one of these
    tiers: str  # models judged, cheapest first (``router eval --tiers``)
    folds: int = 1  # >1: where the recipe trains on it, k-fold within it instead of leaving it out


@dataclass(frozen=True)
class FamilyResult:
    family: str
    trained_without: str  # "family", "fold" (k-fold within it) or "" (never trained on it)
    result: EvalResult


def headline(result: EvalResult) -> dict[str, float | None]:
    """The router's figures on a family: cost at 95%/97% of the top model's quality (dollars,
    any number of tiers) and, for two tiers, APGR and CPT(50%)."""
    m = next(r for r in result.routers if r.name == "tierwise").metrics
    keys = ("apgr", "cpt50") if len(result.tiers) == 2 else ("cost_at_95", "cost_at_97")
    return {k: m.get(k) for k in keys}


def _rows(family: Family) -> list[Row]:
    return [r for r in read_rows(family.files) if r.source.startswith(family.prefixes)]


Recipe = Callable[[tuple[str, ...], frozenset[str], Path], Artifact]
"""(source prefixes left out, row ids left out, where to write) -> an artifact trained without them."""


def leave_one_family_out(
    recipe: Recipe,
    trained_on: Collection[str],
    families: Sequence[Family],
    encoder: Encoder,
    *,
    never: Sequence[str] = (),
    seed: int = 1,
    progress: Callable[[str], None] = lambda _: None,
) -> list[FamilyResult]:
    """Train ``recipe`` once without each family it trains on (``trained_on``: the sources of
    its rows; ``never``: source prefixes it always leaves out), and once on everything for the
    families it never sees; score each family with the artifact that never saw it."""
    out = []
    with tempfile.TemporaryDirectory(prefix="tierwise-lofo-") as tmp:
        routers: dict[object, Router] = {}

        def router_without(key: object, label: str, prefixes: tuple[str, ...], ids: frozenset[str]) -> Router:
            if key not in routers:
                progress(f"training {encoder.name} without {label}")
                routers[key] = Router(recipe(prefixes, ids, Path(tmp) / f"a{len(routers)}"), encoder, cache_size=0)
            return routers[key]

        for family in families:
            outcome = tier_matrix(_rows(family), parse_tiers(family.tiers))
            seen = any(src.startswith(family.prefixes) for src in trained_on) and not any(
                p.startswith(tuple(never)) for p in family.prefixes
            )
            fold = np.zeros(len(outcome.rows), int)
            how = ""
            if seen and family.folds > 1:
                fold = np.random.default_rng(seed).integers(0, family.folds, len(outcome.rows))
                how = "fold"
            elif seen:
                how = "family"
            quality = np.zeros((len(outcome.rows), len(outcome.tiers)), np.float32)
            cost, features = np.zeros_like(quality), None
            for k in range(int(fold.max()) + 1):
                if how == "fold":
                    held = frozenset(r.id for r, f in zip(outcome.rows, fold, strict=True) if f == k)
                    label = f"fold {k + 1}/{family.folds} of {family.name}"
                    router = router_without((family.name, k), label, (), held)
                elif how == "family":
                    router = router_without(family.prefixes, family.name, family.prefixes, frozenset())
                else:
                    router = router_without((), "nothing", (), frozenset())
                rows = fold == k
                f = router.features([r.prompt for r, m in zip(outcome.rows, rows, strict=True) if m])
                q, c = router.score_features(f)
                cols = select_tiers(router.tiers, outcome.tiers)
                if features is None:
                    features = np.zeros((len(rows), f.shape[1]), np.float32)
                quality[rows], cost[rows], features[rows] = q[:, cols], c[:, cols], f
            assert features is not None
            result = evaluate(outcome, features, quality, cost)
            figures = ", ".join(f"{k} {v:.3f}" for k, v in headline(result).items() if v is not None)
            progress(f"{family.name}: {result.n} rows, {figures}")
            out.append(FamilyResult(family.name, how, result))
    return out


def mmlu_groups(sources: Sequence[str], groups: int, seed: int = 0) -> list[tuple[str, ...]]:
    """Whole MMLU subjects dealt into ``groups`` families at random (fixed seed)."""
    names = sorted(set(sources))
    order = np.random.default_rng(seed).permutation(len(names))
    return [tuple(names[j] for j in order[g::groups]) for g in range(groups)]
