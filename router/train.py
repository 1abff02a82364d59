"""Training: outcome files -> per-tier estimators -> a checksummed artifact.

``--tiers local=A|A2,mid=B|B2,frontier=C`` says which model's outcomes stand for each tier;
``|`` lists aliases, so files that name the same tier's model differently (RouterBench's
``mixtral-8x7b-chat`` and MMLU's ``Mixtral-8x7B-Instruct``) train one estimator.
``FILE:0.05`` weights a file's rows (auxiliary domains that should inform, not dominate).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from router.artifact import Artifact, save_artifact
from router.calibrate import fit_cost_weight
from router.data import Row, read_rows, row_json
from router.encoders import Encoder
from router.estimators import DEFAULT_C, F32, LENGTH_SCALE, TrainingSet, fit_tier_models, text_features
from router.progress import log

__all__ = ["DataSpec", "embed_rows", "parse_data_spec", "train", "without_rows"]


@dataclass(frozen=True)
class DataSpec:
    path: Path
    weight: float = 1.0


def without_rows(spec: DataSpec, ids: set[str], path: Path) -> DataSpec:
    """``spec`` less the rows ``ids``: a copy of its file at ``path`` without them, if it has any."""
    rows = read_rows([spec.path])
    if not any(r.id in ids for r in rows):
        return spec
    with path.open("w") as fh:
        for row in rows:
            if row.id not in ids:
                fh.write(json.dumps(row_json(row)) + "\n")
    return DataSpec(path, spec.weight)


def parse_data_spec(spec: str) -> DataSpec:
    path, _, weight = spec.rpartition(":") if spec.rpartition(":")[2].replace(".", "", 1).isdigit() else (spec, "", "")
    return DataSpec(Path(path), float(weight) if weight else 1.0)


def embed_rows(
    rows: Sequence[Row],
    encoder: Encoder,
    max_chars: int,
    cache_dir: Path | None = None,
    progress: bool = True,
    length_scale: float = LENGTH_SCALE,
) -> F32:
    """Features for rows (embedding of the tail + scalars), cached on disk by content hash."""
    from router.data import prompt_for_routing  # noqa: PLC0415

    tails = [prompt_for_routing(r.prompt, max_chars) for r in rows]
    key = hashlib.sha256(("\x00".join(tails) + encoder.name + str(max_chars)).encode()).hexdigest()[:24]
    cached = cache_dir / f"{encoder.name}-{key}.npy" if cache_dir else None
    if cached is not None and cached.exists():
        emb = np.load(cached, allow_pickle=False)
    else:
        emb = encoder.encode(tails, progress=progress)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, emb, allow_pickle=False)
    lengths = [len(prompt_for_routing(r.prompt, 10**9)) for r in rows]
    out: F32 = np.hstack([emb, text_features(lengths, length_scale)]).astype(np.float32)
    return out


def _tier_set(rows: Sequence[Row], feats: F32, aliases: list[str], weight: float) -> TrainingSet | None:
    idx, scores, costs = [], [], []
    for i, row in enumerate(rows):
        model = next((m for m in aliases if m in row.scores), None)
        if model is None:
            continue
        idx.append(i)
        scores.append(min(1.0, max(0.0, row.scores[model])))
        cost = row.costs.get(model)
        costs.append(np.nan if cost is None else cost)
    if not idx:
        return None
    return TrainingSet(
        features=feats[idx],
        scores=np.array(scores),
        weights=np.full(len(idx), weight),
        costs=np.array(costs, dtype=np.float64),
    )


def _merge(sets: list[TrainingSet]) -> TrainingSet:
    return TrainingSet(
        features=np.vstack([s.features for s in sets]),
        scores=np.concatenate([s.scores for s in sets]),
        weights=np.concatenate([s.weights for s in sets]),
        costs=np.concatenate([s.costs if s.costs is not None else np.full(len(s.scores), np.nan) for s in sets]),
    )


def train(
    data: Sequence[DataSpec],
    tiers: dict[str, list[str]],
    out: Path,
    encoder: Encoder,
    *,
    max_chars: int = 1000,
    c: float = DEFAULT_C,
    length_scale: float = LENGTH_SCALE,
    exclude_sources: Sequence[str] = (),
    calibrate_quality: float | None = 0.95,
    cache_dir: Path | None = None,
    seed: int = 0,
    progress: Callable[[str], None] = log,
) -> Artifact:
    started = time.time()
    per_tier: dict[str, list[TrainingSet]] = {t: [] for t in tiers}
    provenance = []
    calib_rows: list[tuple[F32, np.ndarray, np.ndarray]] = []
    for spec in data:
        rows = [r for r in read_rows([spec.path]) if not any(r.source.startswith(s) for s in exclude_sources)]
        progress(f"{spec.path.name}: {len(rows)} rows (weight {spec.weight}); embedding with {encoder.name}")
        feats = embed_rows(rows, encoder, max_chars, cache_dir, length_scale=length_scale)
        used = {}
        for tier, aliases in tiers.items():
            ts = _tier_set(rows, feats, aliases, spec.weight)
            if ts is not None:
                per_tier[tier].append(ts)
                used[tier] = len(ts.scores)
        provenance.append(
            {
                "file": spec.path.name,
                "sha256": hashlib.sha256(spec.path.read_bytes()).hexdigest(),
                "rows": len(rows),
                "weight": spec.weight,
                "rows_per_tier": used,
            }
        )
        # Rows with every tier's outcome and cost can calibrate the default cost weight.
        complete = [
            i
            for i, r in enumerate(rows)
            if all(any(m in r.scores and r.costs.get(m) is not None for m in tiers[t]) for t in tiers)
        ]
        if complete and spec.weight >= 1.0:
            sc = np.array(
                [
                    [next(r.scores[m] for m in tiers[t] if m in r.scores) for t in tiers]
                    for r in (rows[i] for i in complete)
                ]
            )
            co = np.array(
                [
                    [next(r.costs[m] for m in tiers[t] if m in r.scores) for t in tiers]
                    for r in (rows[i] for i in complete)
                ]
            )
            calib_rows.append((feats[complete], sc, co))
    missing = [t for t, sets in per_tier.items() if not sets]
    if missing:
        raise ValueError(f"no training rows for tier(s) {missing}: check --tiers model names against the files")

    tier_names = list(tiers)
    sets = [_merge(per_tier[t]) for t in tier_names]
    models = fit_tier_models(tier_names, sets, c=c, progress=progress)

    cost_weight = 0.35
    calibration: dict[str, object] = {}
    if calibrate_quality is not None and calib_rows:
        # Calibrate on a held-out fifth: fit on the rest, pick the weight there, keep the full fit.
        f = np.vstack([x[0] for x in calib_rows])
        sc = np.vstack([x[1] for x in calib_rows])
        co = np.vstack([x[2] for x in calib_rows])
        rng = np.random.default_rng(seed)
        hold = rng.random(len(f)) < 0.2
        progress(
            f"calibrating the default cost weight for {calibrate_quality:.0%} of frontier quality "
            f"on {int(hold.sum())} held-out rows"
        )
        partial = fit_tier_models(tier_names, _holdout_sets(sets, f, hold), c=c)
        cost_weight = fit_cost_weight(
            partial.quality(f[hold]), partial.cost(f[hold]), sc[hold], co[hold], quality=calibrate_quality
        )
        calibration = {"target_quality": calibrate_quality, "rows": int(hold.sum()), "cost_weight": cost_weight}

    # Each tier's mean priced call relative to the top tier's: what the cost model learned
    # prices to be, so a policy with other prices can re-scale it (Router.cost_scale).
    means = [_mean_cost(ts) for ts in sets]
    top_mean = means[-1]
    relative_call_cost = {
        t: (m / top_mean if m is not None and top_mean else None) for t, m in zip(tier_names, means, strict=True)
    }
    meta = {
        "relative_call_cost": relative_call_cost,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tier_models": tiers,
        "training_data": provenance,
        "excluded_sources": list(exclude_sources),
        "estimator": {
            "quality": "LogisticRegression",
            "C": c,
            "cost": "Ridge(log cost)",
            "features": f"embedding(tail) + {length_scale:g} * log1p(length)",
        },
        "cost_weight": cost_weight,
        "calibration": calibration,
        "train_seconds": round(time.time() - started, 1),
        "licence_note": (
            "RouterBench/open7b outcomes via shuhao02/RouterDC (no licence stated); "
            "MMLU outcomes lm-sys/RouteLLM (Apache-2.0)"
        ),
    }
    artifact = Artifact(models=models, encoder=encoder.name, max_chars=max_chars, meta=meta, length_scale=length_scale)
    save_artifact(artifact, out)
    progress(f"wrote {out} (version {artifact.version}) in {time.time() - started:.0f}s")
    return artifact


def _mean_cost(ts: TrainingSet) -> float | None:
    if ts.costs is None:
        return None
    ok = np.isfinite(ts.costs) & (ts.costs > 0)
    return float(ts.costs[ok].mean()) if ok.sum() >= 20 else None


def _holdout_sets(sets: list[TrainingSet], calib_features: F32, hold: np.ndarray) -> list[TrainingSet]:
    """Training sets without the rows reserved for calibration (matched by feature identity)."""
    held = {row.tobytes() for row in calib_features[hold]}
    out = []
    for s in sets:
        keep = np.array([row.tobytes() not in held for row in s.features])
        out.append(
            TrainingSet(s.features[keep], s.scores[keep], s.weights[keep], None if s.costs is None else s.costs[keep])
        )
    return out
