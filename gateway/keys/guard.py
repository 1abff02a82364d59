"""Per-request enforcement: who is calling, may they use this route and tier, are they within
their rate limits, and is there budget for the worst case of this call."""

from __future__ import annotations

import asyncio
import calendar
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from gateway.clock import Clock, SystemClock
from gateway.errors import (
    AuthenticationError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServiceUnavailableError,
)
from gateway.keys.limiter import Admission, Limiter, Reservation
from gateway.keys.models import KEY_PREFIX
from gateway.keys.store import Identity, KeyStore
from gateway.net import is_loopback
from gateway.policy.models import Policy

__all__ = ["Guard", "TokenHold", "bearer_token", "budget_headers", "rate_headers"]

log = logging.getLogger("tierwise.keys")
T = TypeVar("T")


def rate_headers(identity: Identity, used: tuple[int, int], now: float) -> dict[str, str]:
    """OpenAI's rate-limit headers (platform.openai.com, "Rate limits": ``x-ratelimit-limit-*``,
    ``-remaining-*``, ``-reset-*`` for requests and tokens) for the key's limits, from the minute's
    counts (shared by every replica through the limits store). Tokens count what requests hold:
    their worst case until the answer settles it. Our windows are calendar minutes, so both reset
    when the minute does."""
    reset = _duration(Limiter.retry_after(now))
    out: dict[str, str] = {}
    for kind, limit, count in (("requests", identity.rpm_limit, used[0]), ("tokens", identity.tpm_limit, used[1])):
        if limit is not None:
            out[f"x-ratelimit-limit-{kind}"] = str(limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, limit - count))
            out[f"x-ratelimit-reset-{kind}"] = reset
    return out


def budget_headers(identity: Identity, spent: tuple[int, int], now: float) -> dict[str, str]:
    """The key's budget headroom in the shape of OpenAI's rate-limit headers (no provider defines
    budget headers): ``x-tierwise-budget-limit-{daily,monthly}-usd``, ``-remaining-...-usd`` and
    ``x-tierwise-budget-reset-{daily,monthly}``, for the budgets the key has. Like tokens, spend
    counts this request's worst case until its answer settles it; periods are UTC days and months."""
    t = time.gmtime(now)
    midnight = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86400
    next_month = calendar.timegm((t.tm_year + t.tm_mon // 12, t.tm_mon % 12 + 1, 1, 0, 0, 0))
    out: dict[str, str] = {}
    for period, limit, used, ends in (
        ("daily", identity.budget_daily_usd, spent[0], midnight),
        ("monthly", identity.budget_monthly_usd, spent[1], next_month),
    ):
        if limit is not None:
            out[f"x-tierwise-budget-limit-{period}-usd"] = f"{limit:.6g}"
            out[f"x-tierwise-budget-remaining-{period}-usd"] = f"{max(0.0, limit - used / 1e6):.6f}"
            out[f"x-tierwise-budget-reset-{period}"] = _long_duration(ends - now)
    return out


def _duration(seconds: float) -> str:
    """A wait as OpenAI writes it: ``120ms``, ``1s``, ``59s``."""
    return f"{max(1, round(seconds * 1000))}ms" if seconds < 1 else f"{math.ceil(seconds)}s"


def _long_duration(seconds: float) -> str:
    """A wait of hours as OpenAI writes its longer resets (Go's form): ``16h0m0s``, ``6m0s``."""
    s = max(1, math.ceil(seconds))
    hours, rest = divmod(s, 3600)
    return (f"{hours}h" if hours else "") + f"{rest // 60}m{rest % 60}s"


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header ("" when there is none)."""
    header = authorization or ""
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


@dataclass(frozen=True)
class TokenHold:
    """Tokens held in a key's token window at admission, and when (the window they count in)."""

    tokens: int
    at: float


class Guard:
    def __init__(
        self,
        store: KeyStore,
        limiter: Limiter,
        master_key: str | None,
        fail_open: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.master_key = master_key
        self.fail_open = fail_open
        self.clock = clock or SystemClock()
        self.degraded: str | None = None  # the limits store's trouble, for /readyz
        self.limits_down = False  # its last call failed: this replica should not take traffic
        self.unsettled = 0  # settlements the limits store failed: counters need a re-seed
        self.lookup_timeout_s = 3.0
        # The key store failed: until a background probe gets an answer, requests are served from
        # the last known lookups (or refused at once) instead of each waiting out a timeout.
        self.key_store_down: str | None = None
        self.key_store_retry_s = 2.0
        self._probe: asyncio.Task[None] | None = None
        # Its own threads: calls stuck on a dead database must not take the loop's default pool.
        self._store_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tierwise-key-store")

    # -- identity ---------------------------------------------------------------------------
    async def authenticate(self, token: str, client_host: str | None) -> Identity | None:
        """The caller's identity; None in open mode (no keys exist: loopback clients only)."""
        # A Tierwise key is always checked, even while this replica still believes no keys exist
        # (another replica may have just created it): it must never be served as anonymous.
        any_keys = True if token.startswith(KEY_PREFIX) else self.store.cached_any_keys()
        if any_keys is None:  # only then pay for a thread hop and a query
            any_keys = await self._ask_store(self.store.any_keys, lambda: (True, self.store.last_any_keys()))
        if not any_keys:
            if not is_loopback(client_host):
                raise AuthenticationError("this gateway has no API keys yet and only serves loopback clients")
            return None
        if not token:
            raise AuthenticationError("missing API key: send `Authorization: Bearer <key>`")
        hit, identity = self.store.cached_lookup(token)
        if not hit:
            identity = await self._ask_store(lambda: self.store.lookup(token), lambda: self.store.stale_lookup(token))
        if identity is None:
            raise AuthenticationError("invalid or revoked API key")  # never echo the key
        if identity.expires_at is not None and _aware(identity.expires_at).timestamp() <= self.clock.now():
            raise AuthenticationError("API key has expired", code="expired_api_key")
        return identity

    async def _ask_store(self, ask: Callable[[], T], stale: Callable[[], tuple[bool, T]]) -> T:
        """A key-store query, bounded in time: a database that stalls must not stall requests.
        Past the limit (or on an error, or while the store is known to be down) the last known
        answer is used, else it is a fast 503. A revoked key is known as revoked."""
        if self.key_store_down is None:
            try:
                return await self.store_call(ask)
            except ServiceUnavailableError:
                pass
        known, answer = stale()
        if known:
            return answer
        raise ServiceUnavailableError("the key store is not answering; try again shortly")

    async def store_call(self, call: Callable[[], T]) -> T:
        """A key-store call off the loop, in at most ``lookup_timeout_s``; a failure marks the store
        down (a fast 503 here and for every call until a probe finds it answering again)."""
        if self.key_store_down is not None:
            raise ServiceUnavailableError("the key store is not answering; try again shortly")
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._store_threads, call), self.lookup_timeout_s)
        except (TimeoutError, SQLAlchemyError) as exc:
            self.key_store_down = f"key store unavailable ({type(exc).__name__})"
            log.error("%s: serving known keys until it answers again", self.key_store_down)
            if self._probe is None or self._probe.done():
                self._probe = loop.create_task(self._probe_store())
            raise ServiceUnavailableError("the key store is not answering; try again shortly") from exc

    async def _probe_store(self) -> None:
        """Ask the store every ``key_store_retry_s`` until it answers; no request waits for this."""
        loop = asyncio.get_running_loop()
        while self.key_store_down is not None:
            await self.clock.sleep(self.key_store_retry_s)
            try:
                await asyncio.wait_for(
                    loop.run_in_executor(self._store_threads, self.store.ping), self.lookup_timeout_s
                )
            except (TimeoutError, SQLAlchemyError):
                continue
            log.warning("key store answering again")
            self.key_store_down = None

    def is_master(self, token: str) -> bool:
        return bool(self.master_key and token and hmac.compare_digest(token.encode(), self.master_key.encode()))

    @staticmethod
    def authorize(identity: Identity | None, names: set[str], tier: str) -> None:
        if identity is None:
            return
        if identity.allowed_routes is not None and not (names & identity.allowed_routes):
            raise PermissionDeniedError(f"this key may not use model `{sorted(names)[0]}`", param="model")
        if identity.allowed_tiers is not None and tier not in identity.allowed_tiers:
            raise PermissionDeniedError(f"this key may not use tier `{tier}`", param="model")

    @staticmethod
    def fence(identity: Identity | None, policy: Policy) -> frozenset[str] | None:
        """The tiers a key's requests may be answered on, fallback and escalation included (None:
        any). ``allowed_tiers`` names them; ``allowed_routes`` reaches a route's tier (every tier
        for an ``auto`` route), a ``tier/<name>``, or a deployment's tier."""
        if identity is None:
            return None
        fence = identity.allowed_tiers
        if identity.allowed_routes is not None:
            reached: set[str] = set()
            for name in identity.allowed_routes:
                route = policy.route(name)
                if route is not None and route.auto:
                    reached.update(t.name for t in policy.tiers)
                elif route is not None:
                    reached.add(str(route.tier))
                elif name.startswith("tier/"):
                    reached.add(name.removeprefix("tier/"))
                elif (found := policy.deployment(name)) is not None:
                    reached.add(found[0].name)
            fence = frozenset(reached) if fence is None else fence & reached
        return fence

    # -- limits -----------------------------------------------------------------------------
    async def _guarded(self, what: str, call: Callable[[], Awaitable[T]], default: T) -> T:
        """Run a limits-store call; on failure fail open (``default``) or closed (503) per policy."""
        try:
            result = await call()
        except (OSError, ConnectionError, TimeoutError, Exception) as exc:  # redis raises its own tree
            if isinstance(exc, (RateLimitError, QuotaExceededError)):
                raise
            self.degraded = (
                f"limits store unavailable ({type(exc).__name__}); failing {'open' if self.fail_open else 'closed'}"
            )
            self.limits_down = True
            log.error("%s: %s", what, self.degraded)
            if self.fail_open:
                return default
            raise ServiceUnavailableError("budget and rate-limit store unavailable; try again shortly") from exc
        if self.limits_down:
            self.limits_down = False
            if not self.unsettled:
                self.degraded = None
        return result

    async def admit(
        self, identity: Identity | None, tokens: int = 0, worst_usd: float = 0.0
    ) -> tuple[TokenHold | None, Reservation | None, dict[str, str]]:
        """Count the request against the key's rate limits, holding its worst-case ``tokens`` in
        the token window (settled with the real count), and reserve its worst-case cost against
        the key's budgets, so concurrent requests cannot overrun either; one limits-store call.
        Also the rate-limit headers the answer carries."""
        if identity is None:
            return None, None, {}
        now = self.clock.now()
        limited = identity.rpm_limit is not None or identity.tpm_limit is not None
        held = tokens if identity.tpm_limit is not None else 0
        rate = (identity.rpm_limit, identity.tpm_limit, held) if limited else None
        budgeted = identity.budget_daily_usd is not None or identity.budget_monthly_usd is not None
        budget = (worst_usd, identity.budget_daily_usd, identity.budget_monthly_usd) if budgeted else None
        if rate is None and budget is None:
            return None, None, {}
        admission = await self._guarded(
            "admission", lambda: self.limiter.admit(identity.key_id, now, rate, budget), Admission()
        )
        if admission.wait is not None:
            full = (identity.rpm_limit or 0, identity.tpm_limit or 0)
            raise RateLimitError(
                f"rate limit reached for this key "
                f"({identity.rpm_limit} requests / {identity.tpm_limit} tokens per minute)",
                headers={"retry-after": str(max(1, round(admission.wait))), **rate_headers(identity, full, now)},
            )
        if admission.over_budget:
            raise QuotaExceededError(
                "budget exhausted for this key: the worst-case cost of this request does not fit", param=None
            )
        hold = TokenHold(min(held, identity.tpm_limit or 0), now) if limited else None
        headers = rate_headers(identity, admission.used, now) if admission.used is not None else {}
        if admission.spent is not None:
            headers.update(budget_headers(identity, admission.spent, now))
        return hold, admission.reservation, headers

    async def budget_left(self, identity: Identity | None) -> float | None:
        """The smaller share of the daily and monthly budget still unspent (None: no budget)."""
        if identity is None or (identity.budget_daily_usd is None and identity.budget_monthly_usd is None):
            return None
        day, month = await self._guarded(
            "spend lookup", lambda: self.limiter.spent(identity.key_id, self.clock.now()), (0.0, 0.0)
        )
        shares = [
            1 - spent / limit
            for spent, limit in ((day, identity.budget_daily_usd), (month, identity.budget_monthly_usd))
            if limit
        ]
        return min(shares) if shares else None

    async def settle(
        self,
        identity: Identity | None,
        reservation: Reservation | None,
        actual_usd: float,
        tokens: int,
        hold: TokenHold | None = None,
    ) -> None:
        """Never raises: the request was served and ledgered, so a limits store that fails now must
        not turn it into an error (a retrying client would pay twice). The reservation stays
        counted, which errs on the safe side, until the counters are re-seeded from the ledger."""
        try:
            if reservation is not None:
                await self.limiter.settle(reservation, actual_usd)
            if identity is not None and identity.tpm_limit is not None:
                delta = tokens - (hold.tokens if hold else 0)
                if delta:
                    await self.limiter.add_tokens(identity.key_id, delta, hold.at if hold else self.clock.now())
        except Exception as exc:  # redis raises its own tree; every failure is handled the same way
            self.unsettled += 1
            self.limits_down = True
            self.degraded = (
                f"limits store failed during settlement ({type(exc).__name__}); counters re-seed from the ledger"
            )
            log.error("budget settlement failed (%s); the request is in the ledger", type(exc).__name__)

    async def reconcile(self, ledger_spend: Callable[[float], list[tuple[str, float, float]]]) -> bool:
        """After lost settlements, set every key's counters to what the ledger says it spent.
        Reservations in flight elsewhere are not in the ledger yet: for a moment they are not
        counted, which is the smaller error against counting lost reservations forever."""
        if not self.unsettled:
            return True
        now = self.clock.now()
        try:
            for key_id, day, month in await asyncio.to_thread(ledger_spend, now):
                await self.limiter.reset(key_id, day, month, now)
        except Exception as exc:  # the limits store or the ledger is still away: try again later
            log.warning("budget counters not reconciled yet (%s)", type(exc).__name__)
            return False
        log.warning("budget counters re-seeded from the ledger after %d lost settlement(s)", self.unsettled)
        self.unsettled = 0
        self.degraded = None
        return True


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
