"""Routing-outcome files: one prompt a line with each model's measured score (and cost).

Format (see ``../shared/data/routing/README.md``)::

    {"id": ..., "source": ..., "prompt": ..., "outcomes": {"<model>": {"score": 0..1, "cost_usd": float|null}}}
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "OutcomeSet",
    "Row",
    "parse_tier_aliases",
    "parse_tiers",
    "prompt_for_routing",
    "read_rows",
    "row_json",
    "tier_matrix",
]


@dataclass(frozen=True)
class Row:
    id: str
    source: str
    prompt: str
    scores: dict[str, float]
    costs: dict[str, float | None]


def prompt_for_routing(prompt: str, max_chars: int) -> str:
    """The text the router sees, the same at training and serving time.

    RouterBench keeps prompts as a Python-list string (``"['...']"``); we unwrap it. Then we
    keep the tail: the question comes last in few-shot and long prompts.
    """
    text = prompt
    if text.startswith(("['", '["')) and text.endswith(("']", '"]')):
        try:
            parts = ast.literal_eval(text)
            if isinstance(parts, list) and all(isinstance(p, str) for p in parts):
                text = "\n".join(parts)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return text[-max_chars:]


def read_rows(paths: Iterable[Path]) -> list[Row]:
    rows: list[Row] = []
    for path in paths:
        with Path(path).open() as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    outcomes = obj["outcomes"]
                    rows.append(
                        Row(
                            id=str(obj.get("id", f"{path}:{n}")),
                            source=str(obj.get("source", Path(path).stem)),
                            prompt=str(obj["prompt"]),
                            scores={
                                m: float(o["score"]) for m, o in outcomes.items() if o and o.get("score") is not None
                            },
                            costs={
                                m: (None if o.get("cost_usd") is None else float(o["cost_usd"]))
                                for m, o in outcomes.items()
                                if o
                            },
                        )
                    )
                except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
                    raise ValueError(f"{path}:{n}: not a routing-outcome row ({exc})") from exc
    return rows


def row_json(row: Row) -> dict[str, object]:
    """A row as a line of an outcome file (what :func:`read_rows` reads back)."""
    outcomes = {m: {"score": s, "cost_usd": row.costs.get(m)} for m, s in row.scores.items()}
    return {"id": row.id, "source": row.source, "prompt": row.prompt, "outcomes": outcomes}


def parse_tier_aliases(spec: str) -> dict[str, list[str]]:
    """``local=M1|ALIAS,mid=M2,...`` -> ordered {tier: [model, aliases...]}, cheapest first."""
    tiers: dict[str, list[str]] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ValueError(f"--tiers: expected tier=MODEL[|ALIAS...], got {part!r}")
        tier, models = part.split("=", 1)
        tiers[tier.strip()] = [m.strip() for m in models.split("|") if m.strip()]
    if len(tiers) < 2:
        raise ValueError("--tiers: name at least two tiers, cheapest first")
    return tiers


def parse_tiers(spec: str) -> dict[str, str]:
    """``local=M1,mid=M2,frontier=M3`` -> ordered {tier: model}, cheapest first (a tier's first model)."""
    return {tier: models[0] for tier, models in parse_tier_aliases(spec).items() if models}


@dataclass
class OutcomeSet:
    """Rows restricted to the named tiers: scores and costs as (rows x tiers) arrays."""

    rows: list[Row]
    tiers: list[str]
    scores: npt.NDArray[np.float64]
    costs: npt.NDArray[np.float64]  # USD, or calls (top tier = 1) where the file has none
    cost_in_calls: bool
    skipped: int = 0
    sources: list[str] = field(default_factory=list)


def tier_matrix(rows: Sequence[Row], tiers: Mapping[str, str]) -> OutcomeSet:
    names = list(tiers)
    models = [tiers[t] for t in names]
    kept = [r for r in rows if all(m in r.scores for m in models)]
    scores = np.array([[r.scores[m] for m in models] for r in kept], dtype=np.float64).reshape(len(kept), len(names))
    have_cost = bool(kept) and all(r.costs.get(m) is not None for r in kept for m in models)
    if have_cost:
        costs = np.array([[r.costs[m] for m in models] for r in kept], dtype=np.float64)
    else:
        # RouteLLM's convention: cost counted in calls to the top tier (others free).
        costs = np.zeros((len(kept), len(names)))
        costs[:, -1] = 1.0
    return OutcomeSet(
        rows=kept,
        tiers=names,
        scores=scores,
        costs=costs.reshape(len(kept), len(names)),
        cost_in_calls=not have_cost,
        skipped=len(rows) - len(kept),
        sources=[r.source for r in kept],
    )
