"""The request pipeline: from a checked request and an identity to an answer and one ledger row.

No HTTP here: endpoints parse their API's shape into a :class:`ChatRequest`, call :meth:`run`,
and encode what comes back. The steps, in order::

    authenticate -> resolve -> steer (budget) -> authorize -> plan -> admit (rate) -> reserve
    -> dispatch -> settle -> ledger row

Once a request reserved budget, every way out settles the reservation and writes the row;
a request refused before that gets a row too (status, route, key; never the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from opentelemetry import trace

from gateway import tracing
from gateway.availability import Availability
from gateway.chat_request import ChatRequest
from gateway.clock import Clock
from gateway.dispatch import Attempted, Dispatcher, DispatchFailed, Plan
from gateway.errors import (
    AuthenticationError,
    ClientGoneError,
    GatewayError,
    InvalidRequestError,
    UpstreamTimeoutError,
)
from gateway.keys import Guard
from gateway.ledger.models import LedgerRow, new_request_id
from gateway.pipeline.budget import worst_case_tokens, worst_case_usd
from gateway.pipeline.call import Call
from gateway.pipeline.escalation import (
    Step,
    asks_logprobs,
    confidence_in,
    held_confidence,
    higher,
    hold,
    reasons,
    strip_event_logprobs,
    strip_logprobs,
    with_logprobs,
)
from gateway.pipeline.relay import Relay
from gateway.pipeline.sampling import Sample, Sampler
from gateway.policy.models import EscalateConfig
from gateway.policy.store import PolicyStore
from gateway.providers import anthropic_fields
from gateway.providers.base import Completion, UpstreamStream
from gateway.quality.checks import Reply, Verdict, answer_of
from gateway.quality.sandbox import check_answer
from gateway.routing.resolve import Resolver
from gateway.routing.sessions import SESSION_HEADER, valid_session
from gateway.usage import Usage, estimate_tokens, prompt_tokens_bound

__all__ = ["Answer", "Pipeline", "StreamAnswer"]

log = logging.getLogger("tierwise.pipeline")


class RowSink(Protocol):
    """Where rows go (the ledger writer)."""

    def record(self, row: LedgerRow) -> None: ...


@dataclass
class Answer:
    """A complete answer: the upstream's JSON, as it sent it, and the headers to send with it."""

    body: bytes
    headers: dict[str, str]
    cost_usd: float
    payload: dict[str, Any]  # ``body`` parsed


@dataclass
class StreamAnswer:
    """An opened stream: iterate ``relay.events()``; ``relay.finish`` ends it if that never starts."""

    relay: Relay
    headers: dict[str, str]


class Pipeline:
    def __init__(
        self,
        *,
        policy: PolicyStore,
        resolver: Resolver,
        dispatcher: Dispatcher,
        availability: Availability,
        guard: Guard,
        ledger: RowSink,
        clock: Clock,
        sampler: Sampler | None = None,
        refused: Callable[[str], None] = lambda api: None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.dispatcher = dispatcher
        self.availability = availability
        self.guard = guard
        self.ledger = ledger
        self.clock = clock
        self.sampler = sampler
        # Recent client requests' keys, so feedback on an answer the ledger has not written yet
        # can be checked without waiting for it.
        self._recent: OrderedDict[str, LedgerRow] = OrderedDict()
        # Anyone who reaches the port can be refused: those refusals are counted (``refused``),
        # and ledgered only once a client address a minute, so they cannot grow the database.
        self._refused = refused
        self._refusals = _Refusals()

    # -- a request's life -------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def call(
        self, api: str, token: str, client_host: str | None, session: str | None = None
    ) -> AsyncIterator[Call]:
        """Authenticate and yield the request's :class:`Call`; a request refused anywhere inside
        is ledgered (once) and its error carries the request id. ``session``: the client's
        ``x-tierwise-session`` header."""
        call = Call(
            request_id=new_request_id(),
            api=api,
            loaded=self.policy.current,
            started=self.clock.monotonic(),
        )
        try:
            call.identity = await self.guard.authenticate(token, client_host)
            if session is not None:
                if not valid_session(session):
                    raise InvalidRequestError(
                        f"{SESSION_HEADER}: 1-128 letters, digits and ._:- (starting with a letter or digit)",
                        param=SESSION_HEADER,
                        code="invalid_session",
                    )
                call.session = session
            yield call
        except GatewayError as exc:
            if isinstance(exc, AuthenticationError) and call.identity is None:
                self._refused(api)
                call.recorded = not self._refusals.first(client_host, self.clock.now())
            self._record(call, None, None, exc.status_code, exc.code or exc.error_type)
            exc.headers.update(call.headers())
            raise
        except Exception:
            self._record(call, None, None, 500, "internal_error")
            raise

    async def run(self, call: Call, chat: ChatRequest) -> Answer | StreamAnswer:
        call.requested_model = chat.model
        call.stream = chat.stream
        call.provider_fields = chat.body.get(anthropic_fields.MARKER) or []
        plan = await self._plan(call, chat)
        if tracing.enabled():
            _trace_request(call, chat)
        guard, identity = self.guard, call.identity
        escalate = self._escalation(call)
        answers = escalate.max_steps + 1 if escalate else 1  # every answer asked for is paid for
        tokens = worst_case_tokens(chat.body, plan, answers) if identity and identity.tpm_limit is not None else 0
        worst_usd = worst_case_usd(chat.body, plan, answers) if identity else 0.0
        call.token_hold, call.reservation, call.rate_headers = await guard.admit(identity, tokens, worst_usd)
        try:
            if call.span is None:
                return await self._serve(call, chat, plan, escalate)
            with trace.use_span(call.span, end_on_exit=False):  # the upstream attempts' spans are its children
                return await self._serve(call, chat, plan, escalate)
        except BaseException:
            if not call.recorded:  # whatever was raised: release the budget, write the row
                await self.settle(call, None, None, 500, "internal_error")
            raise

    async def _serve(
        self, call: Call, chat: ChatRequest, plan: Plan, escalate: EscalateConfig | None
    ) -> Answer | StreamAnswer:
        if chat.stream:
            return await self._open_stream(call, chat, plan, escalate)
        return await self._complete(call, chat, plan, escalate)

    async def _plan(self, call: Call, chat: ChatRequest) -> Plan:
        loaded, identity = call.loaded, call.identity
        owner = identity.key_id if identity else None
        res = await self.resolver.resolve(loaded, chat.model, chat.body["messages"], call.session, owner)
        call.resolution = res
        call.notes.extend(res.notes)
        limits = loaded.policy.limits
        if limits.budget_steer_below is not None and res.deployment is None:
            left = await self.guard.budget_left(identity)
            if left is not None and left < limits.budget_steer_below:
                steer = limits.budget_steer_tier or loaded.policy.tiers[0].name
                if steer != res.tier:
                    call.notes.append(f"budget {left:.0%} left: steered {res.tier} -> {steer}")
                    res.tier = steer
        Guard.authorize(identity, {chat.model, res.route or chat.model, f"tier/{res.tier}"}, res.tier)
        plan = self.dispatcher.plan(
            loaded, res.tier, deployment=res.deployment, fallback=res.fallback, down=self.availability.down
        )
        fence = Guard.fence(identity, loaded.policy)
        if fence is not None:  # fallback and escalation stay inside what the key may use
            plan = Plan([s for s in plan.steps if s.tier in fence], plan.requested_tier)
        return plan

    def _escalation(self, call: Call) -> EscalateConfig | None:
        """The escalation that applies: the route's, else the policy's; never for a request pinned
        to one deployment (it asked for that model and no other)."""
        res = call.resolution
        if res is None or not res.fallback:
            return None
        route = call.loaded.policy.route(res.route) if res.route else None
        cfg = route.escalate if route is not None and route.escalate is not None else call.loaded.policy.escalate
        return cfg if cfg.on else None

    async def _complete(self, call: Call, chat: ChatRequest, plan: Plan, escalate: EscalateConfig | None) -> Answer:
        config = call.loaded.policy.dispatch
        added_logprobs = asks_logprobs(escalate, chat.body)
        body = with_logprobs(chat.body) if added_logprobs else chat.body
        # The last answer that failed its checks
        previous: tuple[Attempted, Completion, Reply, Verdict] | None = None
        while True:
            attempted = Attempted()
            try:
                completion, _ = await self.dispatcher.complete(plan, body, config, attempted)
            except DispatchFailed as failed:
                if previous is None:
                    raise await self._failed(call, chat, failed) from failed
                # The tier above failed outright: the answer already paid for is the one delivered.
                call.notes.extend(failed.attempted.fallbacks)
                call.escalated.pop()
                attempted, completion, answer, verdict = previous
                break
            except BaseException as exc:
                # The client left (or we broke) while an upstream was working on it: it may bill all of it.
                await self.settle(call, attempted, _worst_usage(chat, attempted), *_abandoned(exc))
                raise
            step = attempted.step
            payload = completion.payload
            answer = answer_of(payload)
            verdict = await check_answer(chat.body, answer)
            why = reasons(escalate, verdict.failed, confidence_in(payload)) if escalate else ()
            above = higher(plan, step.tier) if why and step is not None else None
            if above is None or step is None or len(call.escalated) >= (escalate.max_steps if escalate else 0):
                break
            call.escalated.append(Step(step, _usage_of(chat, completion), why))
            if call.span is not None:
                call.span.add_event("tierwise.escalate", {"tierwise.tier": step.tier, "tierwise.reasons": list(why)})
            previous, plan = (attempted, completion, answer, verdict), above
        call.ttft_ms = (self.clock.monotonic() - call.started) * 1000
        await self._keep_conversation(call, attempted)
        usage = _usage_of(chat, completion)
        _record_checks(call, verdict)
        cost = await self.settle(call, attempted, usage, 200, None)
        self._sample(call, chat, attempted, answer.text, usage, cost)
        headers = call.headers(attempted)
        headers["x-tierwise-cost-usd"] = f"{cost:.8f}"
        payload = completion.payload
        if not added_logprobs:
            return Answer(completion.body, headers, cost, payload)
        payload = strip_logprobs(payload)
        return Answer(orjson.dumps(payload), headers, cost, payload)

    async def _keep_conversation(self, call: Call, attempted: Attempted) -> None:
        """The conversation goes on where this turn ended: an escalated turn moves it up, and the
        tier that answered now holds its prompt in cache."""
        res, step = call.resolution, attempted.step
        if step is None or res is None or res.session is None:
            return
        owner = call.identity.key_id if call.identity else None
        if call.escalated:
            await self.resolver.keep(call.loaded.policy, res.session, owner, step.tier)
        await self.resolver.warmed(call.loaded.policy, res, owner, step.tier, step.price)

    def _sample(
        self, call: Call, chat: ChatRequest, attempted: Attempted, text: str, usage: Usage, cost: float
    ) -> None:
        if self.sampler is not None and attempted.step is not None and self.sampler.wants(call.loaded):
            self.sampler.offer(Sample(call, chat.body, attempted.step, text, usage, cost))

    async def _open_stream(
        self, call: Call, chat: ChatRequest, plan: Plan, escalate: EscalateConfig | None
    ) -> StreamAnswer:
        config = call.loaded.policy.dispatch
        buffered = escalate is not None and escalate.stream == "buffer"
        added_logprobs = buffered and asks_logprobs(escalate, chat.body)
        body = with_logprobs(chat.body) if added_logprobs else chat.body
        sampled = self.sampler is not None and self.sampler.wants(call.loaded)
        # Keep as much of the answer as the checks (or the judge) will read: all of a JSON answer,
        # else the opening a refusal shows in.
        collect = _WHOLE if sampled or buffered or _wants_json(chat.body) else _OPENING
        held: list[bytes] = []
        while True:
            attempted = Attempted()
            try:
                stream, _ = await self.dispatcher.open_stream(plan, body, config, chat.include_usage, attempted)
            except DispatchFailed as failed:
                raise await self._failed(call, chat, failed) from failed
            except BaseException as exc:
                await self.settle(call, attempted, _worst_usage(chat, attempted), *_abandoned(exc))
                raise
            stream.collect = collect
            if not buffered or escalate is None or attempted.step is None:
                break
            # Hold the stream until its check can run; escalate before the client sees a byte.
            held = await hold(stream, escalate, chat.body)
            verdict = await check_answer(chat.body, _reply(stream))
            why = reasons(escalate, verdict.failed, held_confidence(held, escalate))
            above = higher(plan, attempted.step.tier) if why else None
            if above is None or len(call.escalated) >= escalate.max_steps:
                break
            await _close(stream)
            usage = stream.usage or _stream_usage(chat, stream)
            call.escalated.append(Step(attempted.step, usage, why))
            if call.span is not None:
                call.span.add_event(
                    "tierwise.escalate", {"tierwise.tier": attempted.step.tier, "tierwise.reasons": list(why)}
                )
            plan, held = above, []

        await self._keep_conversation(call, attempted)

        def first_event() -> None:
            call.ttft_ms = (self.clock.monotonic() - call.started) * 1000

        async def finish(upstream: UpstreamStream, status: int, error_type: str | None) -> None:
            usage = upstream.usage or _stream_usage(chat, upstream)
            if status == 200:
                _record_checks(call, await check_answer(chat.body, _reply(upstream)))
            cost = await self.settle(call, attempted, usage, status, error_type)
            if sampled and status == 200:
                self._sample(call, chat, attempted, upstream.text, usage, cost)

        relay = Relay(
            stream,
            finish,
            self.clock,
            config.max_stream_s,
            first_event,
            held=held,
            transform=strip_event_logprobs if added_logprobs else None,
        )
        return StreamAnswer(relay, call.headers(attempted))

    async def _failed(self, call: Call, chat: ChatRequest, failed: DispatchFailed) -> Exception:
        err = failed.error
        status = err.status_code if isinstance(err, GatewayError) else 502
        # A timed-out upstream may have produced (and will bill) everything it was allowed to.
        usage = _worst_usage(chat, failed.attempted) if isinstance(err, UpstreamTimeoutError) else None
        await self.settle(call, failed.attempted, usage, status, failed.attempted.error_type or type(err).__name__)
        if isinstance(err, GatewayError):
            err.headers.update(call.headers(failed.attempted))
        return err

    # -- settlement ---------------------------------------------------------------------------
    async def settle(
        self, call: Call, attempted: Attempted | None, usage: Usage | None, status: int, error_type: str | None
    ) -> float:
        """Ledger the request, then settle its budget reservation with what it really cost (once)."""
        row = self._record(call, attempted, usage, status, error_type)
        if row is None:
            return 0.0
        tokens = usage.total if usage else 0
        await self.guard.settle(call.identity, call.reservation, row.cost_usd, tokens, call.token_hold)
        return row.cost_usd

    def _record(
        self, call: Call, attempted: Attempted | None, usage: Usage | None, status: int, error_type: str | None
    ) -> LedgerRow | None:
        if call.recorded:
            return None
        call.recorded = True
        row = call.row(attempted, usage, status, error_type, self.clock.monotonic())
        call.recorded_at = row.created_at
        self.ledger.record(row)
        if call.span is not None:
            _end_request_span(call.span, row)
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


_RECENT = 10_000


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


_WHOLE = 1_000_000  # characters of a streamed answer kept for checks and the judge
_OPENING = 200


def _wants_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _prompt_estimate(chat: ChatRequest) -> int:
    """Prompt tokens when the upstream reports none: the whole request, as a provider bills it."""
    return prompt_tokens_bound(chat.body, chars_per_token=4)


def _record_checks(call: Call, verdict: Verdict) -> None:
    call.checks = verdict.failed
    if verdict.skipped:
        call.notes.append(f"answer check skipped: {verdict.skipped}")


def _reply(stream: UpstreamStream) -> Reply:
    return Reply(stream.text, [(name, args) for name, args in stream.tool_calls.values()], stream.finish_reason)


def _stream_usage(chat: ChatRequest, stream: UpstreamStream) -> Usage:
    return Usage(_prompt_estimate(chat), (stream.completion_chars + 3) // 4, estimated=True)


async def _close(stream: UpstreamStream) -> None:
    aclose = getattr(stream.events, "aclose", None)
    if aclose is not None:
        await aclose()


def _usage_of(chat: ChatRequest, completion: Completion) -> Usage:
    return completion.usage or Usage(
        _prompt_estimate(chat), estimate_tokens(completion.body.decode(errors="ignore")), estimated=True
    )


def _abandoned(exc: BaseException) -> tuple[int, str]:
    """Status and error type of a dispatch that ended without an answer or an upstream error."""
    if isinstance(exc, asyncio.CancelledError | ClientGoneError):
        return 499, "client_disconnected"
    return 500, "internal_error"


def _worst_usage(chat: ChatRequest, attempted: Attempted) -> Usage | None:
    """What an upstream that never reported may bill: the whole prompt and its full output limit."""
    step = attempted.step
    return Usage(_prompt_estimate(chat), step.output_limit(chat.body), estimated=True) if step else None


def _trace_request(call: Call, chat: ChatRequest) -> None:
    """The request's span, with the routing decision on it as an event."""
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


def _end_request_span(span: Any, row: LedgerRow) -> None:
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
