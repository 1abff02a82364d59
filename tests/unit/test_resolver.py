"""Model name -> route, tier or deployment; auto asks the router; unavailable tiers move (no server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.errors import ModelNotFoundError, ServiceUnavailableError
from gateway.policy.loader import LoadedPolicy
from gateway.policy.models import Policy
from gateway.routing.resolve import Resolver, prompt_text
from tests.unit.fakes import THREE_TIERS, policy

AUTO = (
    THREE_TIERS.replace("routes:\n", "routes:\n  - {name: auto, auto: true, tier: mid}\n")
    + "router: {artifact: default}\n"
)


@dataclass(frozen=True)
class _Decision:
    tier: str
    scores: dict[str, float]
    version: str = "stub-1"


@dataclass
class StubRouter:
    """Chooses by the prompt's first word; records what it was asked."""

    tiers: Sequence[str] = ("local", "mid", "frontier")
    version: str = "stub-1"
    asked: list[tuple[str, int | None, Sequence[str] | None]] = field(default_factory=list)

    def decide(
        self,
        text: str,
        *,
        length: int | None = None,
        cost_weight: float | None = None,
        allowed: Sequence[str] | None = None,
        cost_scale: Sequence[float] | None = None,
    ) -> _Decision:
        self.asked.append((text, length, allowed))
        return _Decision(text.split(maxsplit=1)[0], {t: 0.5 for t in self.tiers})

    def cost_scale(self, relative_call_cost: Mapping[str, float | None]) -> list[float]:
        return [1.0 for _ in self.tiers]

    def decides_inline(self, text: str, length: int | None = None) -> bool:
        return True


def resolver(router: StubRouter | None = None, down: set[str] = frozenset()) -> Resolver:  # type: ignore[assignment]
    def tier_ok(p: Policy, tier: str) -> bool:
        return tier not in down

    return Resolver(router, tier_ok)


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedPolicy:
    return policy(tmp_path, AUTO)


MSG = [{"role": "user", "content": "x"}]


async def test_routes_tiers_and_deployments(loaded: LoadedPolicy) -> None:
    r = resolver()
    assert (await r.resolve(loaded, "cheap", MSG)).tier == "local"
    res = await r.resolve(loaded, "tier/frontier", MSG)
    assert (res.route, res.tier, res.fallback) == (None, "frontier", True)
    res = await r.resolve(loaded, "mid-b", MSG)
    assert (res.tier, res.deployment, res.fallback) == ("mid", "mid-b", False)
    assert (await r.resolve(loaded, "auto", MSG)).tier == "mid"  # no router loaded: the route's tier
    for bad in ("gpt-17", "tier/nope"):
        with pytest.raises(ModelNotFoundError):
            await r.resolve(loaded, bad, MSG)


async def test_auto_asks_the_router_with_the_last_user_turn(loaded: LoadedPolicy) -> None:
    router = StubRouter()
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "local please"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "frontier this time"}]},
    ]
    res = await resolver(router).resolve(loaded, "auto", messages)
    assert (res.tier, res.router_tier, res.router_version) == ("frontier", "frontier", "stub-1")
    assert router.asked[0][:2] == ("frontier this time", len("frontier this time"))


async def test_an_unavailable_tier_moves_up_first_then_down(loaded: LoadedPolicy) -> None:
    res = await resolver(down={"mid"}).resolve(loaded, "m", MSG)
    assert res.tier == "frontier" and res.notes == ["tier mid unavailable -> frontier"]
    res = await resolver(down={"frontier"}).resolve(loaded, "tier/frontier", MSG)
    assert res.tier == "mid" and res.notes == ["tier frontier unavailable -> mid"]
    with pytest.raises(ServiceUnavailableError):
        await resolver(down={"local", "mid", "frontier"}).resolve(loaded, "m", MSG)


def test_prompt_text_keeps_the_tail_and_the_whole_length() -> None:
    text, length = prompt_text([{"role": "user", "content": "a" * 100 + "the question?"}], max_chars=13)
    assert (text, length) == ("the question?", 113)
