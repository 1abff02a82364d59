"""Route, then accept or escalate: a cascade replayed over recorded responses.

The router picks a tier; a checker reads that tier's recorded answer and either accepts it or
names the checks it fails, and then the request goes to the next tier up, paying for both
calls, at most ``max_steps`` times. The checker is injected (``Check``: response text -> the
names of failed checks, empty = accept), so the gateway's checks can be replayed here without
``router`` importing ``gateway``. A tier whose response was not recorded is accepted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from router.data import OutcomeSet, prompt_for_routing

__all__ = ["Check", "cascade", "check_failures", "read_responses"]

Check = Callable[[str], Sequence[str]]


def read_responses(path: Path, data: OutcomeSet, tiers: Mapping[str, str]) -> list[list[str | None]]:
    """Each row's recorded response per tier (None where the file has none), in ``data``'s order."""
    by_id: dict[str, dict[str, object]] = {}
    with path.open() as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                by_id[str(obj.get("id"))] = obj["outcomes"]
    out: list[list[str | None]] = []
    for row in data.rows:
        outcomes = by_id.get(row.id, {})
        cells: list[str | None] = []
        for tier in data.tiers:
            o = outcomes.get(tiers[tier])
            text = o.get("response") if isinstance(o, dict) else None
            # RouterBench stores answers as a Python-list string, as it does prompts
            cells.append(None if text is None else prompt_for_routing(str(text), 10**9))
        out.append(cells)
    return out


def check_failures(
    responses: Sequence[Sequence[str | None]], check: Check
) -> tuple[npt.NDArray[np.bool_], list[Counter[str]]]:
    """(rows x tiers) True where the checker rejects the recorded response, and per tier how
    often each check fired."""
    tiers = len(responses[0]) if responses else 0
    failed = np.zeros((len(responses), tiers), dtype=bool)
    fired: list[Counter[str]] = [Counter() for _ in range(tiers)]
    for i, row in enumerate(responses):
        for t, text in enumerate(row):
            if text is None:
                continue
            names = list(check(text))
            failed[i, t] = bool(names)
            fired[t].update(names)
    return failed, fired


def cascade(
    choice: npt.NDArray[np.int_],
    failed: npt.NDArray[np.bool_],
    costs: npt.NDArray[np.float64],
    max_steps: int = 1,
) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.float64]]:
    """The tier whose answer is served and the total cost paid per row, when a rejected answer
    escalates to the next tier up (the top tier's answer is always served)."""
    idx = np.arange(len(choice))
    tier = choice.copy()
    paid = costs[idx, tier].copy()
    top = costs.shape[1] - 1
    for _ in range(max_steps):
        up = failed[idx, tier] & (tier < top)
        if not up.any():
            break
        tier = np.where(up, tier + 1, tier)
        paid = paid + np.where(up, costs[idx, tier], 0.0)
    return tier, paid
