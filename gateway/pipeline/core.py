"""The request pipeline: from a checked request and an identity to an answer and one ledger row.

No HTTP here: endpoints parse their API's shape into a :class:`ChatRequest`, call :meth:`run`,
and encode what comes back. The steps, in order::

    authenticate -> resolve -> steer (budget) -> authorize -> plan -> admit (rate) -> reserve
    -> dispatch -> settle -> ledger row

Once a request reserved budget, every way out settles the reservation and writes the row;
a request refused before that gets a row too (status, route, key; never the body).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from opentelemetry import trace

from gateway import tracing
from gateway.availability import Availability
from gateway.chat_request import ChatRequest
from gateway.clock import Clock
from gateway.dispatch import Attempted, Dispatcher, DispatchFailed, Plan
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    UpstreamTimeoutError,
)
from gateway.keys import Guard
from gateway.ledger.models import new_request_id
from gateway.pipeline import spans
from gateway.pipeline.accounting import Accounts, RowSink, abandoned, stream_usage, usage_of, worst_usage
from gateway.pipeline.budget import worst_case_tokens, worst_case_usd
from gateway.pipeline.call import Call
from gateway.pipeline.escalation import (
    Step,
    asks_logprobs,
    confidence_in,
    escalation_for,
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
from gateway.usage import Usage

__all__ = ["Answer", "Pipeline", "StreamAnswer"]

log = logging.getLogger("tierwise.pipeline")
T = TypeVar("T")


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
        self.clock = clock
        self.sampler = sampler
        self.accounts = Accounts(ledger, guard, clock, refused)

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
                self.accounts.unauthenticated(call, client_host)
            self.accounts.record(call, None, None, exc.status_code, exc.code or exc.error_type)
            exc.headers.update(call.headers())
            raise
        except Exception:
            self.accounts.record(call, None, None, 500, "internal_error")
            raise

    async def run(self, call: Call, chat: ChatRequest) -> Answer | StreamAnswer:
        call.requested_model = chat.model
        call.stream = chat.stream
        call.provider_fields = chat.body.get(anthropic_fields.MARKER) or []
        plan = await self._plan(call, chat)
        if tracing.enabled():
            spans.start_request(call, chat)
        guard, identity = self.guard, call.identity
        escalate = escalation_for(call.loaded, call.resolution)
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
                await self.accounts.settle(call, None, None, 500, "internal_error")
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

    async def _climb(
        self,
        call: Call,
        chat: ChatRequest,
        plan: Plan,
        escalate: EscalateConfig | None,
        attempt: Callable[[Plan, Attempted], Awaitable[T]],
        judge: Callable[[T], Awaitable[tuple[str, ...]]],
        passed_over: Callable[[T], Awaitable[Usage]],
        keep_previous: bool,
    ) -> tuple[Attempted, T]:
        """Dispatch ``plan``; while ``escalate`` finds reasons in the answer (``judge``) and a tier
        is left above, step up and dispatch from there (at most ``max_steps`` times). An answer
        passed over is paid for (``passed_over``: its usage). With ``keep_previous``, a tier above
        that fails outright leaves the answer before it to be delivered."""
        previous: tuple[Attempted, T] | None = None
        while True:
            attempted = Attempted()
            try:
                result = await attempt(plan, attempted)
            except DispatchFailed as failed:
                if previous is None:
                    raise await self._failed(call, chat, failed) from failed
                call.notes.extend(failed.attempted.fallbacks)
                call.escalated.pop()
                return previous
            except BaseException as exc:
                # The client left (or we broke) while an upstream was working on it: it may bill all of it.
                await self.accounts.settle(call, attempted, worst_usage(chat, attempted), *abandoned(exc))
                raise
            step = attempted.step
            if escalate is None or step is None:
                return attempted, result
            why = await judge(result)
            above = higher(plan, step.tier) if why else None
            if above is None or len(call.escalated) >= escalate.max_steps:
                return attempted, result
            call.escalated.append(Step(step, await passed_over(result), why))
            if call.span is not None:
                call.span.add_event("tierwise.escalate", {"tierwise.tier": step.tier, "tierwise.reasons": list(why)})
            previous, plan = ((attempted, result) if keep_previous else None), above

    async def _complete(self, call: Call, chat: ChatRequest, plan: Plan, escalate: EscalateConfig | None) -> Answer:
        config = call.loaded.policy.dispatch
        added_logprobs = asks_logprobs(escalate, chat.body)
        body = with_logprobs(chat.body) if added_logprobs else chat.body

        async def attempt(plan: Plan, attempted: Attempted) -> _Checked:
            completion, _ = await self.dispatcher.complete(plan, body, config, attempted)
            answer = answer_of(completion.payload)
            return _Checked(completion, answer, await check_answer(chat.body, answer))

        async def judge(checked: _Checked) -> tuple[str, ...]:
            assert escalate is not None
            return reasons(escalate, checked.verdict.failed, confidence_in(checked.completion.payload))

        async def passed_over(checked: _Checked) -> Usage:
            return usage_of(chat, checked.completion)

        attempted, checked = await self._climb(call, chat, plan, escalate, attempt, judge, passed_over, True)
        completion = checked.completion
        call.ttft_ms = (self.clock.monotonic() - call.started) * 1000
        await self._keep_conversation(call, attempted)
        usage = usage_of(chat, completion)
        _record_checks(call, checked.verdict)
        cost = await self.accounts.settle(call, attempted, usage, 200, None)
        self._sample(call, chat, attempted, checked.answer.text, usage, cost)
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

        async def attempt(plan: Plan, attempted: Attempted) -> _Held:
            stream, _ = await self.dispatcher.open_stream(plan, body, config, chat.include_usage, attempted)
            stream.collect = collect
            return _Held(stream)

        async def judge(opened: _Held) -> tuple[str, ...]:
            # Hold the stream until its check can run; escalate before the client sees a byte.
            assert escalate is not None
            opened.events = await hold(opened.stream, escalate, chat.body)
            verdict = await check_answer(chat.body, _reply(opened.stream))
            return reasons(escalate, verdict.failed, held_confidence(opened.events, escalate))

        async def passed_over(opened: _Held) -> Usage:
            await _close(opened.stream)
            return stream_usage(chat, opened.stream)

        # A stream passed over is closed: there is no answer before it to fall back on.
        attempted, opened = await self._climb(
            call, chat, plan, escalate if buffered else None, attempt, judge, passed_over, False
        )
        stream = opened.stream
        await self._keep_conversation(call, attempted)

        def first_event() -> None:
            call.ttft_ms = (self.clock.monotonic() - call.started) * 1000

        async def finish(upstream: UpstreamStream, status: int, error_type: str | None) -> None:
            usage = stream_usage(chat, upstream)
            if status == 200:
                _record_checks(call, await check_answer(chat.body, _reply(upstream)))
            cost = await self.accounts.settle(call, attempted, usage, status, error_type)
            if sampled and status == 200:
                self._sample(call, chat, attempted, upstream.text, usage, cost)

        relay = Relay(
            stream,
            finish,
            self.clock,
            config.max_stream_s,
            first_event,
            held=opened.events,
            transform=strip_event_logprobs if added_logprobs else None,
        )
        return StreamAnswer(relay, call.headers(attempted))

    async def _failed(self, call: Call, chat: ChatRequest, failed: DispatchFailed) -> GatewayError:
        # A timed-out upstream may have produced (and will bill) everything it was allowed to.
        timed_out = isinstance(failed.error, UpstreamTimeoutError)
        return await self.accounts.failed(call, failed, worst_usage(chat, failed.attempted) if timed_out else None)


@dataclass
class _Checked:
    """An answer and its checks."""

    completion: Completion
    answer: Reply
    verdict: Verdict


@dataclass
class _Held:
    """An opened stream, and the events held back while its check ran."""

    stream: UpstreamStream
    events: list[bytes] = field(default_factory=list)


_WHOLE = 1_000_000  # characters of a streamed answer kept for checks and the judge
_OPENING = 200


def _wants_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _record_checks(call: Call, verdict: Verdict) -> None:
    call.checks = verdict.failed
    if verdict.skipped:
        call.notes.append(f"answer check skipped: {verdict.skipped}")


def _reply(stream: UpstreamStream) -> Reply:
    return Reply(stream.text, [(name, args) for name, args in stream.tool_calls.values()], stream.finish_reason)


async def _close(stream: UpstreamStream) -> None:
    aclose = getattr(stream.events, "aclose", None)
    if aclose is not None:
        await aclose()
