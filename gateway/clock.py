"""Time, injectable: the gateway asks a clock; tests hand it one they move by hand."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (budget days, rate-limit minutes, expiry)."""
        ...

    def monotonic(self) -> float:
        """Seconds for durations and deadlines (latency, cooldowns, cache ages)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.perf_counter()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
