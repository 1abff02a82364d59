"""K-fold cross-validation of the training recipe on one outcome file.

    tierwise router cv --data FILE [AUX[:W]...] --tiers ... --eval-tiers ... [--folds 5] [--by-source]

The first file is split into folds (random rows, or with ``--by-source`` whole sources, so that
each fold's tasks are unseen); each fold is scored by an artifact trained, with the same
recipe as ``router train``, on the other folds plus every auxiliary file. The out-of-fold
predictions are pooled and judged like ``router eval``. A 443-row dev split moves several
points between runs of equal merit; this uses every row of the (larger) training file.

``first_stage=(encoder, margin)`` judges a two-stage router: each fold also trains the first
stage, and a row keeps the first stage's predictions where, at its calibrated cost weight and
the training prices, its best tier beats the runner-up by ``margin`` (exactly the served
decision at that weight; the curve swept over other weights uses the same split of rows).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from router.core import Router, margins
from router.data import parse_tiers, read_rows, row_json, tier_matrix
from router.encoders import Encoder
from router.estimators import DEFAULT_C
from router.evaluate import EvalResult, evaluate, select_tiers
from router.train import DataSpec, train

__all__ = ["cross_validate"]


def cross_validate(
    data: Sequence[DataSpec],
    tiers: dict[str, list[str]],
    eval_tiers: str,
    encoder: Encoder,
    *,
    folds: int = 5,
    c: float = DEFAULT_C,
    by_source: bool = False,
    seed: int = 1,
    exclude_sources: Sequence[str] = (),
    cache_dir: Path | None = None,
    first_stage: tuple[Encoder, float] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> EvalResult:
    main, aux = data[0], list(data[1:])
    rows = [r for r in read_rows([main.path]) if not any(r.source.startswith(s) for s in exclude_sources)]
    named = parse_tiers(eval_tiers)
    outcome = tier_matrix(rows, named)
    kept = {r.id for r in outcome.rows}
    rows = [r for r in rows if r.id in kept]
    if by_source:
        # Whole sources per fold (MMLU subjects, say): the router is judged on tasks it never saw.
        sources = sorted({r.source for r in rows})
        order = np.random.default_rng(seed).permutation(len(sources))
        fold_of = {sources[j]: i % folds for i, j in enumerate(order)}
        fold = np.array([fold_of[r.source] for r in rows])
    else:
        fold = np.random.default_rng(seed).integers(0, folds, len(rows))
    quality = np.zeros((len(rows), len(named)), np.float32)
    cost = np.zeros_like(quality)
    features = None
    second = 0  # rows the second stage decided
    with tempfile.TemporaryDirectory(prefix="tierwise-cv-") as tmp:
        for k in range(folds):
            part = Path(tmp) / f"{main.path.stem}.fold{k}.jsonl"
            with part.open("w") as fh:
                for row, f in zip(rows, fold, strict=True):
                    if f != k:
                        fh.write(json.dumps(row_json(row)) + "\n")
            unseen = (
                f", {len({r.source for r, f in zip(rows, fold, strict=True) if f == k})} sources unseen"
                if by_source
                else ""
            )
            progress(
                f"fold {k + 1}/{folds}: training on {int((fold != k).sum())} rows + {len(aux)} auxiliary files{unseen}"
            )
            routers = [
                Router(
                    train(
                        [DataSpec(part, main.weight), *aux],
                        tiers,
                        Path(tmp) / f"artifact{k}-{enc.name}",
                        enc,
                        c=c,
                        exclude_sources=exclude_sources,
                        cache_dir=cache_dir,
                        progress=lambda _: None,
                    ),
                    enc,
                    cache_size=0,
                )
                for enc in ([encoder] if first_stage is None else [first_stage[0], encoder])
            ]
            router = routers[-1]
            cols = select_tiers(router.tiers, list(named))
            test = [r.prompt for r, f in zip(rows, fold, strict=True) if f == k]
            feats = router.features(test)
            q, cst = router.score_features(feats)
            if first_stage is not None:
                q1, c1 = routers[0].score(test)
                sure = margins(q1, c1, routers[0].default_cost_weight) >= first_stage[1]
                second += int((~sure).sum())
                q, cst = np.where(sure[:, None], q1, q), np.where(sure[:, None], c1, cst)
            quality[fold == k], cost[fold == k] = q[:, cols], cst[:, cols]
            if features is None:
                features = np.zeros((len(rows), feats.shape[1]), np.float32)
            features[fold == k] = feats
    assert features is not None
    if first_stage is not None:
        progress(f"second stage decided {second}/{len(rows)} rows ({second / max(1, len(rows)):.0%})")
    progress("judging the pooled out-of-fold predictions")
    return evaluate(outcome, features, quality, cost, progress=progress)
