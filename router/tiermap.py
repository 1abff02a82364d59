"""Which of an artifact's quality estimators stands for each tier a policy (or a data file) names.

One rule for the gateway's decisions and for every offline evaluation: an explicit map, else the
same names, else by rank — two tiers take the artifact's top pair (a "cheap vs strong" pair is
its mid and frontier), more are spread over its tiers cheapest to dearest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["estimators_for"]


def estimators_for(
    named: Sequence[str], artifact: Sequence[str], tier_map: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Named tier -> the artifact tier whose estimator stands for it (cheapest first, both)."""
    if tier_map:
        return {t: tier_map[t] for t in named if tier_map.get(t) in artifact}
    if all(t in artifact for t in named):
        return {t: t for t in named}
    k, n = len(artifact), len(named)
    if n == 2 and k > 2:
        return {named[0]: artifact[-2], named[1]: artifact[-1]}
    return {t: artifact[round(i * (k - 1) / max(1, n - 1))] for i, t in enumerate(named)}
