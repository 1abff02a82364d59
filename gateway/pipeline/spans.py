"""The request's own OpenTelemetry span: opened with the routing decision on it, ended with the
row's figures (the upstream attempts' spans, from dispatch, are its children)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from gateway import tracing
from gateway.chat_request import ChatRequest
from gateway.ledger.models import LedgerRow
from gateway.pipeline.call import Call

__all__ = ["end_request", "start_request"]


def start_request(call: Call, chat: ChatRequest) -> None:
    res = call.resolution
    call.span = tracing.start(
        f"tierwise {call.api}",
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": chat.model, "tierwise.request_id": call.request_id},
    )
    if call.span is not None and res is not None:
        decision: dict[str, Any] = {"tierwise.tier": res.tier, "tierwise.route": res.route or ""}
        if res.router_version:
            decision["tierwise.router.version"] = res.router_version
            decision["tierwise.router.tier"] = res.router_tier or ""
            decision.update({f"tierwise.router.score.{t}": v for t, v in res.router_scores.items()})
        call.span.add_event("tierwise.route", decision)


def end_request(span: Any, row: LedgerRow) -> None:
    span.set_attributes(
        {
            "tierwise.tier": row.tier or "",
            "tierwise.deployment": row.deployment or "",
            "tierwise.route": row.route or "",
            "gen_ai.response.model": row.upstream_model or "",
            "gen_ai.usage.input_tokens": row.prompt_tokens,
            "gen_ai.usage.output_tokens": row.completion_tokens,
            "tierwise.cost_usd": row.cost_usd,
            "http.response.status_code": row.status_code,
        }
    )
    if row.status_code >= 500:
        span.set_status(trace.StatusCode.ERROR, row.error_type or "")
    span.end()
