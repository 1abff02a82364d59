"""One tier-mapping rule for the gateway's decisions and the offline evaluations."""

from __future__ import annotations

from gateway.routing.resolve import _artifact_to_policy
from router.evaluate import select_tiers
from router.tiermap import estimators_for

ART = ["local", "mid", "frontier"]


def test_same_names_then_explicit_map_then_rank() -> None:
    assert estimators_for(["local", "frontier"], ART) == {"local": "local", "frontier": "frontier"}
    assert estimators_for(["s", "l"], ART, {"s": "local", "l": "mid", "x": "nope"}) == {"s": "local", "l": "mid"}
    # two tiers named otherwise: the artifact's top pair
    assert estimators_for(["cheap", "strong"], ART) == {"cheap": "mid", "strong": "frontier"}
    assert estimators_for(["a", "b", "c"], ART) == {"a": "local", "b": "mid", "c": "frontier"}
    # more tiers than estimators: spread by rank, neighbours sharing one
    spread = estimators_for(["a", "b", "c", "d", "e"], ART)
    assert list(spread.values()) == ["local", "local", "mid", "frontier", "frontier"]


def test_the_gateway_and_the_evaluation_agree() -> None:
    for named in (["cheap", "strong"], ["a", "b", "c"], ["local", "mid", "frontier"], ["x", "y", "z", "w"]):
        cols = select_tiers(ART, named)
        to_policy = _artifact_to_policy(named, ART, {})
        # every estimator the evaluation uses decides for the (cheapest) tier it stands for
        for tier, col in zip(named, cols, strict=True):
            assert named.index(to_policy[ART[col]]) <= named.index(tier)
        assert set(to_policy) == {ART[c] for c in cols}
