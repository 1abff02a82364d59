"""What a request is billed, and where its one row goes.

Every way out of a request ends in :meth:`Accounts.settle` (the row, then the budget reservation
settled with what the request really cost), or in :meth:`Accounts.record` for one refused before
it reserved anything. When an upstream reports no usage, the estimates here stand in for it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from gateway.chat_request import ChatRequest
from gateway.clock import Clock
from gateway.dispatch import Attempted, DispatchFailed
from gateway.errors import ClientGoneError, GatewayError
from gateway.keys import Guard
from gateway.ledger.models import LedgerRow
from gateway.pipeline import spans
from gateway.pipeline.call import Call
from gateway.providers.base import Completion, UpstreamStream
from gateway.usage import Usage, estimate_tokens, prompt_tokens_bound

__all__ = ["Accounts", "RowSink", "abandoned", "stream_usage", "usage_of", "worst_usage"]

_RECENT = 10_000  # client rows kept for feedback that arrives before the writer wrote them


class RowSink(Protocol):
    """Where rows go (the ledger writer)."""

    def record(self, row: LedgerRow) -> None: ...


class Accounts:
    def __init__(self, ledger: RowSink, guard: Guard, clock: Clock, refused: Callable[[str], None]) -> None:
        self.ledger = ledger
        self._guard = guard
        self._clock = clock
        # Anyone who reaches the port can be refused: those refusals are counted (``refused``),
        # and ledgered only once a client address a minute, so they cannot grow the database.
        self._refused = refused
        self._refusals = _Refusals()
        # Recent client rows, so feedback on an answer the ledger has not written yet can be
        # checked (and counted in its request's hour, route and tier) without waiting for it.
        self._recent: OrderedDict[str, LedgerRow] = OrderedDict()

    def unauthenticated(self, call: Call, client_host: str | None) -> None:
        """Count a refused credential; its row is written only for a source's first this minute."""
        self._refused(call.api)
        call.recorded = not self._refusals.first(client_host, self._clock.now())

    async def settle(
        self, call: Call, attempted: Attempted | None, usage: Usage | None, status: int, error_type: str | None
    ) -> float:
        """Ledger the request, then settle its budget reservation with what it really cost (once)."""
        row = self.record(call, attempted, usage, status, error_type)
        if row is None:
            return 0.0
        tokens = usage.total if usage else 0
        await self._guard.settle(call.identity, call.reservation, row.cost_usd, tokens, call.token_hold)
        return row.cost_usd

    async def failed(self, call: Call, failed: DispatchFailed, usage: Usage | None = None) -> GatewayError:
        """Settle a request whose dispatch failed; the error to raise, with the request's headers."""
        err, attempted = failed.error, failed.attempted
        await self.settle(call, attempted, usage, err.status_code, attempted.error_type or err.code or err.error_type)
        err.headers.update(call.headers(attempted))
        return err

    def record(
        self, call: Call, attempted: Attempted | None, usage: Usage | None, status: int, error_type: str | None
    ) -> LedgerRow | None:
        if call.recorded:
            return None
        call.recorded = True
        row = call.row(attempted, usage, status, error_type, self._clock.monotonic())
        call.recorded_at = row.created_at
        self.ledger.record(row)
        if call.span is not None:
            spans.end_request(call.span, row)
        if call.purpose == "client":
            self._recent[row.request_id] = row
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        return row

    def recent(self, request_id: str) -> dict[str, Any] | None:
        """A recent client request's key (None in open mode), time, route and tier, as
        ``find_request`` reads them from the ledger (whose writer may not have it yet)."""
        row = self._recent.get(request_id)
        if row is None:
            return None
        return {"api_key_id": row.api_key_id, "created_at": row.created_at, "route": row.route, "tier": row.tier}


class _Refusals:
    """Which client addresses were refused this minute (at most ``max_sources`` remembered)."""

    def __init__(self, max_sources: int = 1_000) -> None:
        self._minute = -1
        self._seen: set[str | None] = set()
        self._max = max_sources

    def first(self, source: str | None, now: float) -> bool:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._seen = minute, set()
        if source in self._seen or len(self._seen) >= self._max:
            return False
        self._seen.add(source)
        return True


def _prompt_estimate(chat: ChatRequest) -> int:
    """Prompt tokens when the upstream reports none: the whole request, as a provider bills it."""
    return prompt_tokens_bound(chat.body, chars_per_token=4)


def stream_usage(chat: ChatRequest, stream: UpstreamStream) -> Usage:
    return stream.usage or Usage(_prompt_estimate(chat), (stream.completion_chars + 3) // 4, estimated=True)


def usage_of(chat: ChatRequest, completion: Completion) -> Usage:
    return completion.usage or Usage(
        _prompt_estimate(chat), estimate_tokens(completion.body.decode(errors="ignore")), estimated=True
    )


def worst_usage(chat: ChatRequest, attempted: Attempted) -> Usage | None:
    """What an upstream that never reported may bill: the whole prompt and its full output limit."""
    step = attempted.step
    return Usage(_prompt_estimate(chat), step.output_limit(chat.body), estimated=True) if step else None


def abandoned(exc: BaseException) -> tuple[int, str]:
    """Status and error type of a dispatch that ended without an answer or an upstream error."""
    if isinstance(exc, asyncio.CancelledError | ClientGoneError):
        return 499, "client_disconnected"
    return 500, "internal_error"
