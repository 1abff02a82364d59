"""One colour per tier, the same in every chart, in the order of the policy the gateway runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["NO_TIER", "TierColours"]

# Cheapest first: green, blue, purple, then more for longer line-ups.
PALETTE = ("#2e9d68", "#3c78d8", "#8e4fc2", "#e0892b", "#129c9c", "#c7425a", "#7d6b3d")
NO_TIER = "(none)"  # a request refused before a tier was chosen
_GREY = "#9aa0a6"


@dataclass(frozen=True)
class TierColours:
    order: tuple[str, ...]  # the policy's tiers in its order, then any others the ledger knows

    @classmethod
    def of(cls, policy_tiers: Sequence[str] | None, ledger_tiers: Iterable[str]) -> TierColours:
        order = list(policy_tiers or ())
        order += [t for t in ledger_tiers if t not in order]
        return cls(tuple(order))

    def colour(self, tier: str) -> str:
        if tier in self.order:
            return PALETTE[self.order.index(tier) % len(PALETTE)]
        return _GREY

    def rank(self, tier: str) -> int:
        return self.order.index(tier) if tier in self.order else len(self.order)

    def domain(self, seen: Iterable[str]) -> list[str]:
        """The tiers a chart shows, in tier order (unknown names last)."""
        return sorted(set(seen), key=lambda t: (self.rank(t), t))
