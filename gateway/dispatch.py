"""Send a request to a tier: retries with backoff, Retry-After, cooldowns, fallback up the tiers.

A plan is an ordered list of (tier, deployment) steps. Within a deployment, retryable failures
are retried; when a deployment gives up, the next step is tried, and moving to a higher tier is
written down in ``fallbacks`` (headers and ledger say so).

Failures are classified by what caused them. The upstream saying the *request* is wrong (400,
413, 422) ends the dispatch with a 400 to the client: another deployment would say the same,
and the deployment did nothing wrong. Everything else might be either, so a deployment is cooled
down only when it fails several different requests in a row (a circuit breaker) — or at once when
it refuses connections or our credentials — never because one odd request fails everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway import tracing
from gateway.clock import Clock, SystemClock
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    UnsendableRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeoutError,
)
from gateway.policy.loader import LoadedPolicy
from gateway.policy.models import Deployment, DispatchConfig, Price
from gateway.providers import anthropic_fields
from gateway.providers.base import Completion, Provider, UpstreamStream
from gateway.quality.schemas import over_budget

__all__ = ["Attempted", "DispatchFailed", "Dispatcher", "Plan", "PlanStep"]

log = logging.getLogger("tierwise.dispatch")
T = TypeVar("T")

# The upstream says the request itself is wrong: no retry, no fallback, no cooldown. Not 404: a
# model API answers it for a model or path it does not have (a retired model, a wrong api_base),
# the policy's doing, never the client's (who names a route, not the upstream's model): the next
# deployment serves, and the circuit breaker's probe, which gets the same 404, cools this one.
_REQUEST_FAULT = {400, 413, 422}
# The upstream refuses the gateway (bad key, no access): the deployment is unusable now.
_CREDENTIAL_FAULT = {401, 403}


@dataclass(frozen=True)
class PlanStep:
    tier: str
    deployment: Deployment
    price: Price
    default_output: int = 4096  # output tokens allowed when the client sets no limit
    output_cap: int | None = None  # the most this deployment may be asked for
    auto_breakpoints: bool = False  # prompt-cache breakpoints for a request without any

    @classmethod
    def of(cls, loaded: LoadedPolicy, tier: str, deployment: Deployment) -> PlanStep:
        policy = loaded.policy
        default = deployment.default_max_tokens or policy.limits.budget_default_max_tokens
        auto = policy.caching.anthropic_breakpoints == "auto" and anthropic_fields.takes(deployment)
        price, cap = loaded.price(deployment.name), loaded.output_cap(deployment.name)
        return cls(tier, deployment, price, default, cap, auto)

    def output_limit(self, body: dict[str, Any]) -> int:
        """The output tokens this step may produce: the client's limit, else the deployment's
        default, never above its cap. Reserved against budgets, and sent upstream as the limit."""
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        limit = int(asked or self.default_output)
        return min(limit, self.output_cap) if self.output_cap else limit

    def body_for(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request as this deployment gets it: with exactly the output limit that was reserved,
        and without the fields only another kind of deployment takes."""
        field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        out = {k: v for k, v in body.items() if k not in ("max_tokens", "max_completion_tokens")}
        out[field] = self.output_limit(body)
        if self.deployment.structured_outputs == "json_object_schema":
            _as_json_object(out)
        if self.auto_breakpoints and "cache_control" not in (body.get(anthropic_fields.MARKER) or []):
            return anthropic_fields.place_breakpoints(out)
        return anthropic_fields.for_deployment(out, self.deployment)[0]


def _as_json_object(body: dict[str, Any]) -> None:
    """OpenAI's ``json_schema`` format as llama-cpp-python's server takes it; a schema over the
    budget is not handed to its grammar compiler (which would expand every ``$ref``)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return
    schema = (fmt.get("json_schema") or {}).get("schema")
    fits = isinstance(schema, dict) and over_budget(schema) is None
    body["response_format"] = {"type": "json_object", "schema": schema} if fits else {"type": "json_object"}


@dataclass(frozen=True)
class Plan:
    steps: list[PlanStep]
    requested_tier: str  # where the route (or router) wanted to go


@dataclass
class Attempted:
    """What a dispatch did, successful or not: the ledger's raw material."""

    step: PlanStep | None = None
    attempts: int = 0
    fallbacks: list[str] = field(default_factory=list)
    error_type: str | None = None


class DispatchFailed(Exception):
    """Not an error of its own: the error the client gets, with what the dispatcher tried."""

    def __init__(self, error: GatewayError, attempted: Attempted) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempted = attempted


@dataclass
class _Health:
    failed_requests: int = 0  # consecutive requests this deployment gave up on
    cool_until: float = 0.0
    reason: str = ""
    last_ok: float | None = None  # when it last answered a request
    probing: bool = False


# What the gateway asks a deployment itself before cooling it down: a request nobody can get wrong.
PROBE_BODY: dict[str, Any] = {"model": "probe", "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
EMBED_PROBE_BODY: dict[str, Any] = {"model": "probe", "input": "OK"}
# (the step probed, its answer if any, seconds taken, whether it was an embeddings probe)
ProbeHook = Callable[[PlanStep, Completion | None, float, bool], None]


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        credential: Callable[[str], str | None],
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_probe: ProbeHook | None = None,
    ) -> None:
        self._providers = providers
        self._credential = credential
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._health: dict[str, _Health] = {}
        self._in_flight: Counter[str] = Counter()  # requests each deployment is answering now
        self._probes: set[asyncio.Task[None]] = set()
        self._on_probe = on_probe  # ledgers the probe calls (they are paid)

    # -- availability ---------------------------------------------------------------------
    def key_for(self, deployment: Deployment) -> str | None:
        return self._credential(deployment.api_key_env) if deployment.api_key_env else None

    def has_credentials(self, deployment: Deployment) -> bool:
        return deployment.api_key_env is None or self.key_for(deployment) is not None

    def cooling_down(self, deployment: Deployment) -> bool:
        health = self._health.get(deployment.name)
        return health is not None and health.cool_until > self._clock.monotonic()

    def busy(self, name: str, seconds: float) -> bool:
        """Whether the deployment is answering a request now or answered one in the last
        ``seconds`` (it is alive, and may be too busy to answer a health check)."""
        if self._in_flight[name]:
            return True
        health = self._health.get(name)
        return health is not None and health.last_ok is not None and self._clock.monotonic() - health.last_ok < seconds

    def cooldowns(self) -> dict[str, str]:
        """Deployments cooling down now, and why (for /readyz)."""
        now = self._clock.monotonic()
        return {
            name: f"{h.reason}; {h.cool_until - now:.0f}s left"
            for name, h in self._health.items()
            if h.cool_until > now
        }

    def plan(
        self,
        loaded: LoadedPolicy,
        tier: str,
        *,
        deployment: str | None = None,
        fallback: bool = True,
        down: Container[str] = (),
    ) -> Plan:
        """The deployments to try, in order, from ``tier`` up; those without credentials or down are skipped."""
        policy = loaded.policy
        if deployment is not None:
            found = policy.deployment(deployment)
            assert found is not None
            t, dep = found
            return Plan([PlanStep.of(loaded, t.name, dep)], t.name)
        start = policy.tier_index(tier)
        stop = len(policy.tiers) if fallback and policy.dispatch.fallback_up else start + 1
        steps = [
            PlanStep.of(loaded, t.name, dep)
            for t in policy.tiers[start:stop]
            for dep in t.deployments
            if self.has_credentials(dep) and dep.name not in down
        ]
        return Plan(steps, tier)

    # -- dispatch -------------------------------------------------------------------------
    async def complete(
        self, plan: Plan, body: dict[str, Any], config: DispatchConfig, attempted: Attempted | None = None
    ) -> tuple[Completion, Attempted]:
        """``attempted`` (optional) is filled as the dispatch goes, so a caller that is cancelled
        half-way still knows which deployment was being asked."""

        async def call(step: PlanStep) -> Completion:
            provider, key = self._provider(step), self.key_for(step.deployment)
            return await provider.complete(step.deployment, key, step.body_for(body))

        return await self._run(plan, config, call, attempted or Attempted())

    async def embed(
        self, plan: Plan, body: dict[str, Any], config: DispatchConfig, attempted: Attempted | None = None
    ) -> tuple[Completion, Attempted]:
        """An embeddings request, sent as it is (no output limit, no chat fields) and probed with
        an embeddings request of our own when its deployment keeps failing."""

        async def call(step: PlanStep) -> Completion:
            provider, key = self._provider(step), self.key_for(step.deployment)
            return await provider.embed(step.deployment, key, body)

        return await self._run(plan, config, call, attempted or Attempted(), embeddings=True)

    async def open_stream(
        self,
        plan: Plan,
        body: dict[str, Any],
        config: DispatchConfig,
        include_usage: bool,
        attempted: Attempted | None = None,
    ) -> tuple[UpstreamStream, Attempted]:
        async def call(step: PlanStep) -> UpstreamStream:
            provider, key = self._provider(step), self.key_for(step.deployment)
            return await provider.open_stream(step.deployment, key, step.body_for(body), include_usage)

        return await self._run(plan, config, call, attempted or Attempted())

    def _provider(self, step: PlanStep) -> Provider:
        return self._providers[step.deployment.provider]

    async def _run(
        self,
        plan: Plan,
        config: DispatchConfig,
        call: Callable[[PlanStep], Awaitable[T]],
        attempted: Attempted,
        embeddings: bool = False,
    ) -> tuple[T, Attempted]:
        steps = [s for s in plan.steps if not self.cooling_down(s.deployment)]
        for skipped in (s for s in plan.steps if s not in steps):
            attempted.fallbacks.append(f"{skipped.deployment.name}: cooling down")
        steps = steps or list(plan.steps)  # all cooling down: try anyway rather than refuse
        if not steps:
            raise DispatchFailed(
                UpstreamError(message="no deployment is available for this request", code="no_deployment"), attempted
            )
        last: UpstreamError | None = None
        for i, step in enumerate(steps):
            if i > 0 and step.tier != steps[i - 1].tier:
                attempted.fallbacks.append(f"tier {steps[i - 1].tier} -> {step.tier}")
            attempted.step = step
            for retry in range(step.deployment.max_retries + 1):
                attempted.attempts += 1
                try:
                    self._in_flight[step.deployment.name] += 1
                    try:
                        result = await (_traced(call, step, embeddings) if tracing.enabled() else call(step))
                    finally:
                        self._in_flight[step.deployment.name] -= 1
                except UpstreamError as exc:
                    last = exc
                    attempted.error_type = exc.kind
                    attempted.fallbacks.append(f"{step.deployment.name}: {exc.kind}")
                    # The provider's message is redacted of keys; the client sees only its kind.
                    log.warning("deployment %s failed (attempt %d): %s", step.deployment.name, retry + 1, exc)
                    if isinstance(exc, UpstreamHTTPError) and exc.status in _REQUEST_FAULT:
                        said = f": {exc.said}" if exc.said else ""
                        err = InvalidRequestError(
                            f"the upstream model rejected the request ({exc.status}){said}",
                            code="upstream_rejected_request",
                        )
                        raise DispatchFailed(err, attempted) from exc
                    if isinstance(exc, UnsendableRequest):
                        err = InvalidRequestError(
                            f"this request cannot be sent to deployment {step.deployment.name}: {exc.message}",
                            code="unsupported_by_provider",
                        )
                        raise DispatchFailed(err, attempted) from exc
                    if _deployment_fault(exc) or not exc.retryable or retry == step.deployment.max_retries:
                        break
                    delay = self._delay(exc, retry, config)
                    if delay is None:
                        break  # Retry-After longer than we are willing to hold the client
                    await self._clock.sleep(delay)
                else:
                    self._health[step.deployment.name] = _Health(last_ok=self._clock.monotonic())
                    return result, attempted
            assert last is not None
            self._gave_up(step, last, config, embeddings)
        assert last is not None
        final = last
        if not isinstance(last, UpstreamTimeoutError):
            final = UpstreamError(message=f"every upstream deployment failed; the last one: {last.message}")
        raise DispatchFailed(final, attempted) from last

    def _gave_up(self, step: PlanStep, exc: UpstreamError, config: DispatchConfig, embeddings: bool) -> None:
        health = self._health.setdefault(step.deployment.name, _Health())
        health.failed_requests += 1
        if _deployment_fault(exc):
            self._cool(step.deployment, health, exc.message, config)
        elif health.failed_requests >= config.failures_before_cooldown and not health.probing:
            # Several requests failed in a row: maybe the deployment, maybe requests it cannot serve
            # (one client can send many). A request of our own that anything can answer tells which.
            health.probing = True
            task = asyncio.get_running_loop().create_task(self._verify(step, exc, config, embeddings))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def _verify(self, step: PlanStep, exc: UpstreamError, config: DispatchConfig, embeddings: bool) -> None:
        health = self._health.setdefault(step.deployment.name, _Health())
        started = self._clock.monotonic()
        completion: Completion | None = None
        try:
            provider, key = self._provider(step), self.key_for(step.deployment)
            if embeddings:
                completion = await provider.embed(step.deployment, key, EMBED_PROBE_BODY)
            else:
                completion = await provider.complete(step.deployment, key, PROBE_BODY)
        except UpstreamError:
            self._cool(step.deployment, health, exc.message, config)
        else:
            log.info(
                "deployment %s answered a probe: its %d failures were the requests'",
                step.deployment.name,
                health.failed_requests,
            )
            health.failed_requests = 0
        finally:
            health.probing = False
            if self._on_probe is not None:
                self._on_probe(step, completion, self._clock.monotonic() - started, embeddings)

    async def probes_done(self) -> None:
        """Wait for the probes under way (tests; shutdown)."""
        while self._probes:
            await asyncio.gather(*list(self._probes), return_exceptions=True)

    def _cool(self, deployment: Deployment, health: _Health, why: str, config: DispatchConfig) -> None:
        health.cool_until = self._clock.monotonic() + config.cooldown_s
        health.reason = f"{health.failed_requests} failed request(s), last: {why}"
        log.warning("deployment %s cooling down for %.0fs: %s", deployment.name, config.cooldown_s, health.reason)

    def _delay(self, exc: UpstreamError, retry: int, config: DispatchConfig) -> float | None:
        if isinstance(exc, UpstreamHTTPError) and exc.retry_after is not None:
            wait: float = exc.retry_after
            return wait if wait <= config.max_retry_after_s else None
        backoff: float = min(config.backoff_max_s, config.backoff_base_s * 2.0**retry)
        return backoff * (0.5 + self._rng.random() / 2)  # jitter: replicas must not retry in lockstep


async def _traced(call: Callable[[PlanStep], Awaitable[T]], step: PlanStep, embeddings: bool) -> T:
    with tracing.attempt(step.deployment, "embeddings" if embeddings else "chat") as span:
        result = await call(step)
        tracing.usage(span, getattr(result, "usage", None))
        return result


def _deployment_fault(exc: UpstreamError) -> bool:
    """Failures no request can cause: the server is not there, or it refuses our credentials."""
    if isinstance(exc, UpstreamConnectError):
        return True
    return isinstance(exc, UpstreamHTTPError) and exc.status in _CREDENTIAL_FAULT
