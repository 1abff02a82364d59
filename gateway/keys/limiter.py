"""Budgets and rate limits per key: reserve the worst case atomically, settle the real cost.

Two backends behind one small base class: in-process (single node; every operation runs
without an ``await`` inside, so it is atomic on the event loop) and Redis (several replicas;
each check-and-add is one Lua script, so it is atomic across them). Money is counted in
integer micro-dollars so concurrent additions never lose a fraction.
"""

from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass

__all__ = ["Admission", "BudgetAsk", "Limiter", "MemoryLimiter", "RateAsk", "Reservation", "day_month", "to_micros"]

RateAsk = tuple[int | None, int | None, int]
"""A key's rpm and tpm limits (None: none) and the tokens a request holds against tpm."""
BudgetAsk = tuple[float, float | None, float | None]
"""A request's worst-case USD and its key's daily and monthly budgets (None: none)."""


def to_micros(usd: float) -> int:
    return math.ceil(usd * 1_000_000 - 1e-9)


def day_month(now: float) -> tuple[str, str]:
    t = time.gmtime(now)
    return time.strftime("%Y%m%d", t), time.strftime("%Y%m", t)


@dataclass(frozen=True)
class Reservation:
    key_id: str
    micros: int
    day: str
    month: str


@dataclass(frozen=True)
class Admission:
    """A request's admission: refused by a rate limit (``wait``: seconds until the window frees
    up), refused by a budget (``over_budget``; the request still counts against its rate
    limits, as a refused request does), or admitted with its budget ``reservation`` (None when
    no budget was asked for)."""

    wait: float | None = None
    over_budget: bool = False
    reservation: Reservation | None = None
    # Requests and tokens counted in this minute's windows, this request's included (when a rate
    # was asked): what the rate-limit headers report.
    used: tuple[int, int] | None = None
    # USD micros spent today and this month, this request's reservation included (when admitted
    # with a budget): what the budget headers report.
    spent: tuple[int, int] | None = None


class Limiter(abc.ABC):
    async def admit(self, key_id: str, now: float, rate: RateAsk | None, budget: BudgetAsk | None) -> Admission:
        """The rate check and then the budget reservation of one request (None: not asked). A
        backend where each is a round trip does both in one."""
        used = None
        if rate is not None:
            wait = await self.check_rate(key_id, rate[0], rate[1], now, rate[2])
            if wait is not None:
                return Admission(wait=wait)
            used = await self.rate_used(key_id, now)
        if budget is None:
            return Admission(used=used)
        reservation = await self.reserve(key_id, budget[0], budget[1], budget[2], now)
        if reservation is None:
            return Admission(over_budget=True, used=used)
        day, month = await self.spent(key_id, now)
        return Admission(reservation=reservation, used=used, spent=(to_micros(day), to_micros(month)))

    @abc.abstractmethod
    async def check_rate(
        self, key_id: str, rpm: int | None, tpm: int | None, now: float, tokens: int = 0
    ) -> float | None:
        """Count one request and hold ``tokens`` (its worst case, capped at the limit) in this
        minute's token window, atomically; None if allowed, else seconds until the window frees up."""

    @abc.abstractmethod
    async def rate_used(self, key_id: str, now: float) -> tuple[int, int]:
        """Requests and tokens counted in this minute's windows."""

    @abc.abstractmethod
    async def add_tokens(self, key_id: str, tokens: int, now: float) -> None: ...

    @abc.abstractmethod
    async def reserve(
        self, key_id: str, usd: float, daily: float | None, monthly: float | None, now: float
    ) -> Reservation | None:
        """Reserve ``usd`` if it fits both budgets; None if it does not."""

    @abc.abstractmethod
    async def settle(self, reservation: Reservation, actual_usd: float) -> None: ...

    @abc.abstractmethod
    async def spent(self, key_id: str, now: float) -> tuple[float, float]:
        """USD spent (settled plus reserved) today and this month."""

    @abc.abstractmethod
    async def seed(self, key_id: str, day_usd: float, month_usd: float, now: float) -> None:
        """Start counters from the ledger's sums, where the backend has none yet."""

    @abc.abstractmethod
    async def reset(self, key_id: str, day_usd: float, month_usd: float, now: float) -> None:
        """Set counters to the ledger's sums (after settlements were lost)."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        pass

    @staticmethod
    def retry_after(now: float) -> float:
        return 60.0 - (now % 60.0)


class MemoryLimiter(Limiter):
    def __init__(self) -> None:
        self._money: dict[tuple[str, str], int] = {}
        self._reqs: dict[tuple[str, int], int] = {}
        self._tokens: dict[tuple[str, int], int] = {}

    async def check_rate(
        self, key_id: str, rpm: int | None, tpm: int | None, now: float, tokens: int = 0
    ) -> float | None:
        minute = int(now // 60)
        reqs = self._reqs.get((key_id, minute), 0)
        used = self._tokens.get((key_id, minute), 0)
        if rpm is not None and reqs + 1 > rpm:
            return self.retry_after(now)
        if tpm is not None and used + min(tokens, tpm) > tpm:
            return self.retry_after(now)
        self._reqs[(key_id, minute)] = reqs + 1
        if tpm is not None:
            self._tokens[(key_id, minute)] = used + min(tokens, tpm)
        for k in [k for k in self._reqs if k[1] < minute - 1]:
            self._reqs.pop(k, None)
            self._tokens.pop(k, None)
        return None

    async def rate_used(self, key_id: str, now: float) -> tuple[int, int]:
        k = (key_id, int(now // 60))
        return self._reqs.get(k, 0), self._tokens.get(k, 0)

    async def add_tokens(self, key_id: str, tokens: int, now: float) -> None:
        k = (key_id, int(now // 60))
        self._tokens[k] = self._tokens.get(k, 0) + tokens

    async def reserve(
        self, key_id: str, usd: float, daily: float | None, monthly: float | None, now: float
    ) -> Reservation | None:
        day, month = day_month(now)
        amount = to_micros(usd)
        d, m = self._money.get((key_id, day), 0), self._money.get((key_id, month), 0)
        if daily is not None and d + amount > to_micros(daily):
            return None
        if monthly is not None and m + amount > to_micros(monthly):
            return None
        self._money[(key_id, day)] = d + amount
        self._money[(key_id, month)] = m + amount
        return Reservation(key_id, amount, day, month)

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        delta = to_micros(actual_usd) - reservation.micros
        for period in (reservation.day, reservation.month):
            k = (reservation.key_id, period)
            self._money[k] = self._money.get(k, 0) + delta

    async def spent(self, key_id: str, now: float) -> tuple[float, float]:
        day, month = day_month(now)
        return self._money.get((key_id, day), 0) / 1e6, self._money.get((key_id, month), 0) / 1e6

    async def seed(self, key_id: str, day_usd: float, month_usd: float, now: float) -> None:
        day, month = day_month(now)
        self._money.setdefault((key_id, day), to_micros(day_usd))
        self._money.setdefault((key_id, month), to_micros(month_usd))

    async def reset(self, key_id: str, day_usd: float, month_usd: float, now: float) -> None:
        day, month = day_month(now)
        self._money[(key_id, day)] = to_micros(day_usd)
        self._money[(key_id, month)] = to_micros(month_usd)
