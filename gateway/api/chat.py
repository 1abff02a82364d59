"""POST /v1/chat/completions: resolve, dispatch, respond, ledger."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.api.body import read_json_body
from gateway.chat_request import message_text, parse_chat_request
from gateway.dispatch import Attempted, DispatchFailed, Plan
from gateway.errors import GatewayError
from gateway.keys import Guard, Identity, Reservation
from gateway.policy.loader import LoadedPolicy
from gateway.pricing import cost_usd
from gateway.providers.base import ProviderError, UpstreamStream, Usage, estimate_tokens
from gateway.resolve import Resolution
from gateway.state import GatewayState

__all__ = ["router"]

router = APIRouter()
log = logging.getLogger("tierwise.chat")


class _Call:
    """One request's bookkeeping, turned into exactly one ledger row."""

    def __init__(self, state: GatewayState, loaded: LoadedPolicy, body: dict[str, Any], stream: bool) -> None:
        self.state = state
        self.loaded = loaded
        self.body = body
        self.stream = stream
        self.request_id = "req_" + secrets.token_hex(12)
        self.started = time.perf_counter()
        self.ttft_ms: float | None = None
        self.res: Resolution | None = None
        self.identity: Identity | None = None
        self.reservation: Reservation | None = None

    @property
    def api_key_id(self) -> str | None:
        return self.identity.key_id if self.identity else None

    def prompt_estimate(self) -> int:
        return sum(estimate_tokens(message_text(m.get("content"))) for m in self.body.get("messages", []))

    def worst_case_usd(self, plan: Plan, default_max_tokens: int) -> float:
        """The most this call can cost on any deployment it may reach (for budget reservation)."""
        chars = sum(len(message_text(m.get("content"))) for m in self.body.get("messages", []))
        prompt = chars // 2 + 16  # generous: 2 characters a token
        out = int(self.body.get("max_completion_tokens") or self.body.get("max_tokens") or default_max_tokens)
        out *= int(self.body.get("n") or 1)
        return max((cost_usd(s.price, prompt, out) for s in plan.steps), default=0.0)

    async def finish(self, attempted: Attempted, usage: Usage | None, status: int, error_type: str | None) -> float:
        """Ledger the call and settle its budget reservation with what it really cost."""
        cost = self.record(attempted, usage, status, error_type)
        if self.state.guard is not None:
            tokens = (usage.prompt_tokens + usage.completion_tokens) if usage else 0
            await self.state.guard.settle(self.identity, self.reservation, cost, tokens)
        return cost

    def record(self, attempted: Attempted, usage: Usage | None, status: int, error_type: str | None) -> float:
        step = attempted.step
        usage = usage or Usage(0, 0)
        cost = (
            cost_usd(self.loaded.price(step.deployment.name), usage.prompt_tokens, usage.completion_tokens)
            if step
            else 0.0
        )
        frontier = self.loaded.policy.frontier.deployments[0]
        counterfactual = cost_usd(self.loaded.price(frontier.name), usage.prompt_tokens, usage.completion_tokens)
        res = self.res
        notes = (res.notes if res else []) + attempted.fallbacks
        self.state.ledger.record(
            {
                "request_id": self.request_id,
                "api_key_id": self.api_key_id,
                "route": res.route if res else None,
                "requested_model": str(self.body.get("model", ""))[:256],
                "tier": step.tier if step else (res.tier if res else None),
                "deployment": step.deployment.name if step else None,
                "upstream_model": step.deployment.model if step else None,
                "router_tier": res.router_tier if res else None,
                "router_scores": orjson.dumps(res.router_scores).decode() if res and res.router_scores else None,
                "router_version": res.router_version if res else None,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "usage_estimated": usage.estimated,
                "cost_usd": cost,
                "frontier_cost_usd": counterfactual,
                "ttft_ms": self.ttft_ms,
                "latency_ms": (time.perf_counter() - self.started) * 1000,
                "status_code": status,
                "stream": self.stream,
                "attempts": attempted.attempts,
                "fallbacks": orjson.dumps(notes).decode() if notes else None,
                "error_type": error_type,
            }
        )
        return cost

    def headers(self, attempted: Attempted) -> dict[str, str]:
        out = {"x-tierwise-request-id": self.request_id}
        if attempted.step is not None:
            out["x-tierwise-tier"] = attempted.step.tier
            out["x-tierwise-deployment"] = attempted.step.deployment.name
        if self.res is not None and self.res.router_version:
            out["x-tierwise-router-version"] = self.res.router_version
            out["x-tierwise-router-tier"] = self.res.router_tier or ""
            out["x-tierwise-router-scores"] = ",".join(f"{k}={v:.3f}" for k, v in self.res.router_scores.items())
        if len(attempted.fallbacks) > 0:
            out["x-tierwise-fallbacks"] = str(len(attempted.fallbacks))
        return out


async def chat_completions(request: Request) -> Response:
    # A plain Starlette route: the handler reads and checks its own body, so FastAPI's
    # dependency and validation machinery would only add time to the hottest path.
    state: GatewayState = request.app.state.tierwise
    guard = state.guard
    identity = await guard.authenticate(request) if guard is not None else None
    loaded = state.policy.current
    body = await read_json_body(request, loaded.policy.limits.max_body_bytes)
    chat = parse_chat_request(body, loaded.policy.limits.unknown_fields)
    if chat.dropped:
        log.info("dropped unknown request fields %s (policy limits.unknown_fields: drop)", list(chat.dropped))
    body = chat.body
    call = _Call(state, loaded, body, chat.stream)
    call.identity = identity
    call.res = await state.resolver.resolve(loaded, chat.model, body["messages"])
    limits = loaded.policy.limits
    if guard is not None and limits.budget_steer_below is not None and call.res.deployment is None:
        left = await guard.budget_left(identity)
        if left is not None and left < limits.budget_steer_below:
            steer = limits.budget_steer_tier or loaded.policy.tiers[0].name
            if steer != call.res.tier:
                call.res.notes.append(f"budget {left:.0%} left: steered {call.res.tier} -> {steer}")
                call.res.tier = steer
    Guard.authorize(identity, {chat.model, call.res.route or chat.model, f"tier/{call.res.tier}"}, call.res.tier)
    plan = state.dispatcher.plan(
        loaded, call.res.tier, deployment=call.res.deployment, fallback=call.res.fallback, down=state.down
    )
    if identity is not None and identity.allowed_tiers is not None:
        plan = Plan([s for s in plan.steps if s.tier in identity.allowed_tiers], plan.requested_tier)
    if guard is not None:
        await guard.admit(identity)
        call.reservation = await guard.reserve(
            identity, call.worst_case_usd(plan, loaded.policy.limits.budget_default_max_tokens)
        )
    # The client's ``model`` is a route name, not the upstream's; providers set their own.
    upstream_body = {k: v for k, v in body.items() if k != "stream_options"}
    config = loaded.policy.dispatch
    try:
        if chat.stream:
            stream, attempted = await state.dispatcher.open_stream(plan, upstream_body, config, chat.include_usage)
        else:
            completion, attempted = await state.dispatcher.complete(plan, upstream_body, config)
    except DispatchFailed as failed:
        err = failed.error
        status = err.status_code if isinstance(err, GatewayError) else 502
        await call.finish(failed.attempted, None, status, failed.attempted.error_type or type(err).__name__)
        if isinstance(err, GatewayError):
            err.headers.update(call.headers(failed.attempted))
        raise err from failed

    if chat.stream:
        return StreamingResponse(
            _relay(call, stream, attempted), media_type="text/event-stream", headers=call.headers(attempted)
        )
    call.ttft_ms = (time.perf_counter() - call.started) * 1000
    usage = completion.usage
    if usage is None:
        usage = Usage(call.prompt_estimate(), estimate_tokens(completion.body.decode(errors="ignore")), estimated=True)
    cost = await call.finish(attempted, usage, 200, None)
    headers = call.headers(attempted)
    headers["x-tierwise-cost-usd"] = f"{cost:.8f}"
    return Response(completion.body, media_type="application/json", headers=headers)


async def _relay(call: _Call, stream: UpstreamStream, attempted: Attempted) -> AsyncIterator[bytes]:
    status, error_type = 200, None
    try:
        async for event in stream.events:
            if call.ttft_ms is None:
                call.ttft_ms = (time.perf_counter() - call.started) * 1000
            yield event
        if stream.error == "malformed_stream":
            status, error_type = 502, "malformed_stream"
            yield _error_event("the upstream sent a malformed stream chunk", "malformed_stream")
    except ProviderError as exc:
        status, error_type = 502, stream.error or type(exc).__name__
        yield _error_event("the upstream stream broke off", error_type)
    except BaseException:
        status, error_type = 499, "client_disconnected"  # nginx's code for "client closed request"
        raise
    finally:
        # Shielded: on a client disconnect this runs inside a cancelled scope, and the spend
        # must still be recorded and the upstream connection released.
        with anyio.CancelScope(shield=True):
            aclose = getattr(stream.events, "aclose", None)
            if aclose is not None:
                await aclose()
            usage = stream.usage
            if usage is None:
                usage = Usage(call.prompt_estimate(), (stream.completion_chars + 3) // 4, estimated=True)
            await call.finish(attempted, usage, status, error_type)


# ``gateway.app._Gateway`` serves POST here without the router; this registration still answers
# other methods on the path with 405.
router.add_route("/v1/chat/completions", chat_completions, methods=["POST"])


def _error_event(message: str, code: str) -> bytes:
    payload = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"
