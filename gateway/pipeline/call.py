"""One request from arrival to its single ledger row, whatever happens on the way."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from gateway.clock import Clock
from gateway.dispatch import Attempted, PlanStep, ProbeHook
from gateway.keys import Identity, Reservation
from gateway.keys.guard import TokenHold
from gateway.ledger.models import LedgerRow, new_request_id
from gateway.pipeline.escalation import Step
from gateway.policy.loader import LoadedPolicy
from gateway.policy.models import Limits
from gateway.policy.pricing import cost_usd
from gateway.providers import anthropic_fields
from gateway.providers.base import Completion
from gateway.routing.resolve import Resolution
from gateway.usage import Usage

__all__ = ["Call", "probe_recorder"]

_MAX_HEADER = 512
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _header_safe(text: str) -> str:
    """Printable ASCII only: notes can quote what a client sent (a model name), and a header
    must not carry a line break, nor a character HTTP/1.1 cannot encode (a 500 before this)."""
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


@dataclass
class Call:
    """What the pipeline knows about a request; ``row()`` turns it into the ledger's row."""

    request_id: str
    api: str
    loaded: LoadedPolicy
    started: float  # the clock's monotonic seconds at arrival
    identity: Identity | None = None
    requested_model: str = ""
    stream: bool = False
    resolution: Resolution | None = None
    reservation: Reservation | None = None
    token_hold: TokenHold | None = None
    rate_headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-*, for keys with limits
    span: Any = None  # the request's trace span, when tracing is on (ended when the row is written)
    ttft_ms: float | None = None
    notes: list[str] = field(default_factory=list)  # what moved the request off its path, in order
    recorded: bool = False  # the row is written: exactly once per request
    recorded_at: datetime | None = None  # its row's created_at
    purpose: str = "client"  # or shadow / judge: the gateway's own calls for judged samples
    parent_request_id: str | None = None  # the sampled request a shadow or judge call belongs to
    checks: list[str] = field(default_factory=list)  # answer checks that failed
    escalated: list[Step] = field(default_factory=list)  # paid answers that failed and were replaced
    session: str | None = None  # the client's name for the conversation (x-tierwise-session)
    provider_fields: list[str] = field(default_factory=list)  # fields only some deployments take

    @property
    def limits(self) -> Limits:
        return self.loaded.policy.limits

    @property
    def api_key_id(self) -> str | None:
        return self.identity.key_id if self.identity else None

    def cost(self, attempted: Attempted, usage: Usage) -> float:
        step = attempted.step
        return cost_usd(step.price, usage) if step else 0.0

    def row(
        self,
        attempted: Attempted | None,
        usage: Usage | None,
        status: int,
        error_type: str | None,
        now: float,
    ) -> LedgerRow:
        """The request's one row; an escalated request's tokens and cost are every paid answer's."""
        attempted = attempted or Attempted()
        usage = usage or Usage(0, 0)
        step, res = attempted.step, self.resolution
        frontier = self.loaded.policy.frontier.deployments[0]
        notes = self.notes + attempted.fallbacks
        steps = [*self.escalated, Step(step, usage)] if self.escalated and step is not None else []
        before = self.escalated
        own = self.cost(attempted, usage) + sum(s.cost for s in before)
        uncached = sum(cost_usd(s.step.price, s.usage.uncached()) for s in before)
        uncached += cost_usd(step.price, usage.uncached()) if step else 0.0
        # Embeddings are pinned, not routed: no tier, and no saving to report against the frontier.
        pinned = self.api == "embeddings"
        paid = sum((s.usage for s in before), usage)
        return LedgerRow(
            request_id=self.request_id,
            api_key_id=self.api_key_id,
            route=res.route if res else None,
            requested_model=self.requested_model[:256],
            tier=None if pinned else step.tier if step else (res.tier if res else None),
            deployment=step.deployment.name if step else None,
            upstream_model=step.deployment.model if step else None,
            router_tier=res.router_tier if res else None,
            router_scores=orjson.dumps(res.router_scores).decode() if res and res.router_scores else None,
            router_version=res.router_version if res else None,
            prompt_tokens=paid.prompt_tokens,
            completion_tokens=paid.completion_tokens,
            cache_read_tokens=paid.cache_read_tokens,
            cache_write_tokens=paid.cache_write_tokens,
            cache_write_1h_tokens=paid.cache_write_1h_tokens,
            reasoning_tokens=paid.reasoning_tokens,
            usage_estimated=paid.estimated,
            cost_usd=own,
            # The frontier's price for the answer delivered, token kind by kind (as if the frontier
            # had read and written the same cache): escalating costs savings, as it should.
            frontier_cost_usd=own if pinned else cost_usd(self.loaded.price(frontier.name), usage),
            uncached_cost_usd=uncached,
            ttft_ms=self.ttft_ms,
            latency_ms=(now - self.started) * 1000,
            status_code=status,
            stream=self.stream,
            attempts=attempted.attempts,
            fallbacks=orjson.dumps(notes).decode() if notes else None,
            error_type=error_type,
            api=self.api,
            purpose=self.purpose,
            parent_request_id=self.parent_request_id,
            session_id=self.session_id,
            checks=orjson.dumps(self.checks).decode() if self.checks else None,
            steps=orjson.dumps([s.as_json() for s in steps]).decode() if steps else None,
        )

    @property
    def session_id(self) -> str | None:
        res = self.resolution
        return res.session if res is not None and res.session else self.session

    def headers(self, attempted: Attempted | None = None) -> dict[str, str]:
        out = {"x-tierwise-request-id": self.request_id, **self.rate_headers}
        if (session := self.session_id) is not None:
            out["x-tierwise-session"] = session
        step = attempted.step if attempted else None
        if step is not None:
            out["x-tierwise-tier"] = step.tier
            out["x-tierwise-deployment"] = step.deployment.name
            if self.provider_fields and not anthropic_fields.takes(step.deployment):
                out["x-tierwise-dropped"] = ",".join(self.provider_fields)
        res = self.resolution
        if res is not None and res.router_version:
            out["x-tierwise-router-version"] = res.router_version
            out["x-tierwise-router-tier"] = res.router_tier or ""
            out["x-tierwise-router-scores"] = ",".join(f"{k}={v:.3f}" for k, v in res.router_scores.items())
        if self.escalated and step is not None:
            hops = [*(s.step.tier for s in self.escalated), step.tier]
            out["x-tierwise-escalated"] = "; ".join(
                f"{a}->{b} ({','.join(s.reasons)})" for a, b, s in zip(hops, hops[1:], self.escalated, strict=False)
            )
        notes = self.notes + (attempted.fallbacks if attempted else [])
        if notes:
            # Served off the path asked for (a tier unavailable, a deployment failing): say so here,
            # not only in the ledger.
            out["x-tierwise-fallbacks"] = _header_safe("; ".join(notes))[:_MAX_HEADER]
        return out


class _Rows(Protocol):
    def record(self, row: LedgerRow) -> None: ...


def probe_recorder(ledger: _Rows, policy: Callable[[], LoadedPolicy], clock: Clock) -> ProbeHook:
    """What the dispatcher calls with each probe it sent to a failing deployment: the probe is
    paid like any call, so it gets a ledger row (purpose ``probe``), priced by the policy then."""

    def record(step: PlanStep, completion: Completion | None, seconds: float, embeddings: bool) -> None:
        now = clock.monotonic()
        call = Call(
            request_id=new_request_id(),
            api="embeddings" if embeddings else "chat",
            loaded=policy(),
            started=now - seconds,
            requested_model=step.deployment.name,
            purpose="probe",
        )
        usage = completion.usage if completion is not None else None
        status, error = (200, None) if completion is not None else (502, "probe_failed")
        ledger.record(call.row(Attempted(step=step, attempts=1), usage, status, error, now))

    return record
