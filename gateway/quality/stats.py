"""Estimates from judged samples: a weighted mean with its 95% interval.

Each judged sample stands for ``1 / sample_rate`` requests, so means are weighted by it. The
interval is Wilson's score interval for a proportion, taken at Kish's effective sample size
``(Σw)² / Σw²`` (equal to n when the sample rate never changed). A sample's value may be 0.5
(the cheaper answer won one judge game of two): it counts as half a success.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MIN_SAMPLES", "Estimate", "Sums", "wilson"]

Z95 = 1.959964
# Below this many effective samples no quality figure is claimed: the interval at 30 is still
# about ±8 points at 90% adequacy, ±15 at 50%; fewer and the figure says little.
MIN_SAMPLES = 30


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``p`` observed over ``n`` trials."""
    if n <= 0:
        return 0.0, 1.0
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int  # samples
    n_eff: float  # effective samples under the weights

    @property
    def plus_minus(self) -> float:
        """Half the interval's width (the interval itself is not symmetric)."""
        return (self.high - self.low) / 2

    @property
    def enough(self) -> bool:
        return self.n_eff >= MIN_SAMPLES


@dataclass(frozen=True)
class Sums:
    """What SQL sums up for a weighted mean: count, Σw, Σw², Σw·x."""

    n: int = 0
    w: float = 0.0
    w2: float = 0.0
    wx: float = 0.0

    def __add__(self, other: Sums) -> Sums:
        return Sums(self.n + other.n, self.w + other.w, self.w2 + other.w2, self.wx + other.wx)

    def estimate(self) -> Estimate | None:
        if self.n == 0 or self.w <= 0 or self.w2 <= 0:
            return None
        mean = min(1.0, max(0.0, self.wx / self.w))
        n_eff = self.w * self.w / self.w2
        low, high = wilson(mean, n_eff)
        return Estimate(mean, low, high, self.n, n_eff)
