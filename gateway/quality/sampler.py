"""Judged samples of live traffic, after the client has its answer.

A sampled request is queued (a bounded queue: a full one skips the sample, never delays the
client). A background task judges up to ``quality.concurrency`` samples at once (each waits on
a shadow call and two judge calls, seconds each with real models): it asks another tier the
same request — the reference (top) tier when a cheaper one answered, the next tier down when
the reference did, or we would never learn that cheap would have done — and has the judge
compare the two answers in both orders. Shadow and judge calls are ledgered with their purpose
and the sampled request's id, are never charged to the caller's key, and stop for the day once
they have cost ``quality.max_daily_usd``. Each sample's outcome is counted in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import orjson
from opentelemetry import trace
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gateway import tracing
from gateway.availability import Availability
from gateway.clock import Clock
from gateway.dispatch import Attempted, Dispatcher, DispatchFailed, Plan, PlanStep
from gateway.keys.limiter import Limiter
from gateway.ledger import signal_rollups
from gateway.ledger.models import new_request_id
from gateway.pipeline.accounting import RowSink
from gateway.pipeline.budget import worst_case_usd
from gateway.pipeline.call import Call
from gateway.pipeline.sampling import Sample
from gateway.policy.loader import LoadedPolicy
from gateway.quality.checks import answer_of
from gateway.quality.judge import combine, judge_messages, parse_verdict
from gateway.quality.models import Judgement
from gateway.routing.resolve import RouterLike, prompt_text
from gateway.usage import Usage

__all__ = ["QualitySampler"]

log = logging.getLogger("tierwise.quality")
_JUDGEMENTS = Judgement.__table__  # type: ignore[attr-defined]
_BUDGET_KEY = "__quality__"  # the daily cap is a budget like a key's, shared by replicas through Redis
_JUDGE_MAX_TOKENS = 400
T = TypeVar("T")


class QualitySampler:
    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        availability: Availability,
        ledger: RowSink,
        limiter: Limiter,
        engine: Engine,
        router: RouterLike | None,
        clock: Clock,
        rng: random.Random | None = None,
        outcomes: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        """``outcomes``: told of each sample's end, ``judged``, ``skipped`` or ``failed``."""
        self.dispatcher = dispatcher
        self.availability = availability
        self.ledger = ledger
        self.limiter = limiter
        self.engine = engine
        self.router = router
        self.clock = clock
        self.rng = rng or random.Random()
        self._queue: deque[Sample] = deque()
        self._wakeup = asyncio.Event()
        self._outcomes = outcomes
        self.judged = 0
        self.skipped = 0  # sampled, but the queue was full or the day's cap reached
        self.failed = 0

    # -- the request path: O(1), never waits --------------------------------------------------
    def wants(self, loaded: LoadedPolicy) -> bool:
        rate = loaded.policy.quality.sample_rate
        return rate > 0 and self.rng.random() < rate

    def offer(self, sample: Sample) -> None:
        quality = sample.call.loaded.policy.quality
        if len(self._queue) >= quality.queue_size:
            self._skip()
            return
        self._queue.append(sample)
        self._wakeup.set()

    def _skip(self) -> None:
        self.skipped += 1
        self._outcomes("skipped")

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- the background task -------------------------------------------------------------------
    async def run(self) -> None:
        running: set[asyncio.Task[None]] = set()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and len(running) < self._queue[0].call.loaded.policy.quality.concurrency:
                task = asyncio.create_task(self._judge_one(self._queue.popleft()))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: self._wakeup.set())  # room for the next sample

    async def _judge_one(self, sample: Sample) -> None:
        try:
            await self.judge(sample)
        except Exception:  # a failed sample must never stop the loop
            self.failed += 1
            self._outcomes("failed")
            log.exception("judging sample %s failed", sample.call.request_id)

    async def judge(self, sample: Sample) -> None:
        span = tracing.start("tierwise judge", {"tierwise.request_id": sample.call.request_id})
        if span is None:
            await self._judge(sample)
            return
        with trace.use_span(span, end_on_exit=True):  # the shadow and judge attempts are its children
            await self._judge(sample)

    async def _judge(self, sample: Sample) -> None:
        loaded = sample.call.loaded
        policy, quality = loaded.policy, loaded.policy.quality
        judge = policy.judge
        names = [t.name for t in policy.tiers]
        served = sample.served.tier
        if judge is None or len(names) < 2 or served not in names:
            return
        at = names.index(served)
        shadow_tier = names[-1] if at < len(names) - 1 else names[-2]
        shadow_plan = self.dispatcher.plan(loaded, shadow_tier, fallback=False, down=self.availability.down)
        if not shadow_plan.steps:
            return
        judge_plan = Plan([PlanStep.of(loaded, "judge", judge)], "judge")
        body = {k: v for k, v in sample.body.items() if k not in ("stream", "stream_options")}
        parent = sample.call.request_id
        shadow = await self._capped(
            loaded,
            worst_case_usd(body, shadow_plan),
            lambda: self._call(loaded, shadow_plan, body, "shadow", parent, shadow_tier),
        )
        if shadow is None:
            return
        shadow_text, shadow_usage, shadow_cost = shadow
        cheaper_first = at < names.index(shadow_tier)
        cheap, dear = (sample.answer, shadow_text) if cheaper_first else (shadow_text, sample.answer)
        bodies = [_judge_body(body, cheap, dear), _judge_body(body, dear, cheap)]
        games = await self._capped(
            loaded,
            worst_case_usd(bodies[0], judge_plan, steps=2),
            lambda: asyncio.gather(*(self._call(loaded, judge_plan, b, "judge", parent) for b in bodies)),
        )
        if games is None:
            return
        outcome = combine(*(parse_verdict(g[0]) if g is not None else None for g in games))
        encoder, embedding, chars = await self._features(sample)
        res = sample.call.resolution
        row = {
            "request_id": parent,
            "served_tier": served,
            "shadow_tier": shadow_tier,
            "cheaper_tier": served if cheaper_first else shadow_tier,
            "reference_tier": shadow_tier if cheaper_first else served,
            "verdict": outcome.verdict,
            "adequacy": outcome.adequacy,
            "verdicts": orjson.dumps(outcome.raw).decode(),
            "judge": judge.name,
            "sample_rate": quality.sample_rate,
            "router_version": res.router_version if res else None,
            "router_tier": res.router_tier if res else None,
            "predicted": orjson.dumps(res.router_scores).decode() if res and res.router_scores else None,
            "encoder": encoder,
            "embedding": embedding,
            "prompt_chars": chars,
            "prompt_tokens": sample.usage.prompt_tokens,
            "served_tokens": sample.usage.completion_tokens,
            "shadow_tokens": shadow_usage.completion_tokens,
            "served_cost_usd": sample.cost,
            "shadow_cost_usd": shadow_cost,
            "prompt_text": _conversation(body) if quality.store_text else None,
            "served_text": sample.answer if quality.store_text else None,
            "shadow_text": shadow_text if quality.store_text else None,
        }
        sampled = {"request_at": sample.call.recorded_at, "route": res.route if res else None, "tier": served}
        await asyncio.to_thread(self._write, row, sampled)
        self.judged += 1
        if outcome.verdict == "unparseable":  # kept, and counted apart: it measured nothing
            log.warning("judge %s gave no readable verdict for %s", judge.name, parent)
            self._outcomes("unparseable")
        else:
            self._outcomes("judged")

    async def _capped(self, loaded: LoadedPolicy, worst: float, work: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``work`` if its worst case fits today's cap (reserved like a key's budget, so replicas
        sharing Redis share the cap), then count what it really cost."""
        reservation = await self.limiter.reserve(
            _BUDGET_KEY, worst, loaded.policy.quality.max_daily_usd, None, self.clock.now()
        )
        if reservation is None:
            self._skip()
            return None
        result: T | None = None
        try:
            result = await work()
        finally:
            await self.limiter.settle(reservation, _spent(result))
        return result

    async def _call(
        self, loaded: LoadedPolicy, plan: Plan, body: dict[str, Any], purpose: str, parent: str, tier: str = "judge"
    ) -> tuple[str, Usage, float] | None:
        """One of the gateway's own calls, ledgered as such; None when it failed."""
        call = Call(
            request_id=new_request_id(),
            api="chat",
            loaded=loaded,
            started=self.clock.monotonic(),
            requested_model=plan.steps[0].deployment.name if purpose == "judge" else f"tier/{tier}",
            purpose=purpose,
            parent_request_id=parent,
        )
        attempted: Attempted | None = None
        try:
            completion, attempted = await self.dispatcher.complete(plan, body, loaded.policy.dispatch)
        except DispatchFailed as failed:
            error = failed.attempted.error_type
            self.ledger.record(call.row(failed.attempted, None, 502, error, self.clock.monotonic()))
            return None
        answer = answer_of(completion.payload)
        text = answer.text or "".join(f"{name}({args})" for name, args in answer.tool_calls)
        usage = completion.usage or Usage(0, 0, estimated=True)
        row = call.row(attempted, usage, 200, None, self.clock.monotonic())
        self.ledger.record(row)
        return text, usage, row.cost_usd

    async def _features(self, sample: Sample) -> tuple[str | None, bytes | None, int]:
        """What the router would learn from: the embedding of the prompt's tail and its length."""
        loaded = sample.call.loaded
        cfg = loaded.policy.router
        text, length = prompt_text(sample.body["messages"], cfg.max_chars if cfg else 2000)
        router = self.router
        if router is None:
            return None, None, length
        feats = await asyncio.to_thread(router.features, [text], lengths=[length])
        embedding = np.asarray(feats, dtype=np.float32)[0, :-1].astype(np.float16)
        return router.encoder_name, embedding.tobytes(), length

    def _write(self, row: dict[str, Any], sampled: dict[str, Any]) -> None:
        """The judgement, and its count in the rollups (by ``sampled``: the request's time,
        route and tier), in one transaction."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(_JUDGEMENTS), [row])
                signal_rollups.add_judgement(conn, row | sampled)
        except IntegrityError:
            log.info("sample %s was judged already", row["request_id"])


def _judge_body(request: dict[str, Any], answer_a: str, answer_b: str) -> dict[str, Any]:
    return {
        "model": "judge",
        "messages": judge_messages(request["messages"], answer_a, answer_b),
        "temperature": 0,
        "max_tokens": _JUDGE_MAX_TOKENS,
    }


def _conversation(body: dict[str, Any]) -> str:
    return orjson.dumps(body["messages"]).decode()


def _spent(result: object) -> float:
    """The cost of a ``_call`` result, or of a list of them (None: nothing was paid)."""
    if isinstance(result, tuple):
        return float(result[2])
    if isinstance(result, list):
        return sum(_spent(r) for r in result)
    return 0.0
