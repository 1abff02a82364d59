"""Send a request to a tier: retries with backoff, Retry-After, cooldowns, fallback up the tiers.

A plan is an ordered list of (tier, deployments). Within a deployment we retry retryable
failures; a deployment that is exhausted cools down and the next one is tried; a tier that
is exhausted hands over to the next tier up. Every step is written down in ``fallbacks`` so
the ledger can say what happened.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from gateway.policy.loader import LoadedPolicy
from gateway.policy.models import Deployment, DispatchConfig, Price
from gateway.providers.base import (
    Completion,
    Provider,
    ProviderError,
    UpstreamHTTPError,
    UpstreamStream,
    UpstreamTimeout,
)

__all__ = ["Attempted", "DispatchFailed", "Dispatcher", "Plan", "PlanStep"]

log = logging.getLogger("tierwise.dispatch")
T = TypeVar("T")

# Upstream 4xx that mean "the client's request is wrong": retrying or falling back won't help.
_CLIENT_FAULT = {400, 413, 422}


@dataclass(frozen=True)
class PlanStep:
    tier: str
    deployment: Deployment
    price: Price


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
    def __init__(self, error: Exception, attempted: Attempted) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempted = attempted


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._providers = providers
        self._env = env if env is not None else os.environ
        self._clock = clock
        self._sleep = sleep
        self._cooldown_until: dict[str, float] = {}

    # -- availability ---------------------------------------------------------------------
    def key_for(self, deployment: Deployment) -> str | None:
        return self._env.get(deployment.api_key_env) if deployment.api_key_env else None

    def has_credentials(self, deployment: Deployment) -> bool:
        return deployment.api_key_env is None or bool(self._env.get(deployment.api_key_env))

    def cooling_down(self, deployment: Deployment) -> bool:
        return self._cooldown_until.get(deployment.name, 0.0) > self._clock()

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
            return Plan([PlanStep(t.name, dep, loaded.price(dep.name))], t.name)
        start = policy.tier_index(tier)
        stop = len(policy.tiers) if fallback and policy.dispatch.fallback_up else start + 1
        steps = [
            PlanStep(t.name, dep, loaded.price(dep.name))
            for t in policy.tiers[start:stop]
            for dep in t.deployments
            if self.has_credentials(dep) and dep.name not in down
        ]
        return Plan(steps, tier)

    # -- dispatch -------------------------------------------------------------------------
    async def complete(self, plan: Plan, body: dict[str, Any], config: DispatchConfig) -> tuple[Completion, Attempted]:
        async def call(step: PlanStep) -> Completion:
            return await self._provider(step).complete(step.deployment, self.key_for(step.deployment), body)

        return await self._run(plan, config, call)

    async def open_stream(
        self, plan: Plan, body: dict[str, Any], config: DispatchConfig, include_usage: bool
    ) -> tuple[UpstreamStream, Attempted]:
        async def call(step: PlanStep) -> UpstreamStream:
            provider = self._provider(step)
            return await provider.open_stream(step.deployment, self.key_for(step.deployment), body, include_usage)

        return await self._run(plan, config, call)

    def _provider(self, step: PlanStep) -> Provider:
        return self._providers[step.deployment.provider]

    async def _run(
        self, plan: Plan, config: DispatchConfig, call: Callable[[PlanStep], Awaitable[T]]
    ) -> tuple[T, Attempted]:
        attempted = Attempted()
        steps = [s for s in plan.steps if not self.cooling_down(s.deployment)] or list(plan.steps)
        if not steps:
            raise DispatchFailed(
                UpstreamError("no deployment is available for this request", code="no_deployment"), attempted
            )
        last: ProviderError | None = None
        for i, step in enumerate(steps):
            if i > 0 and step.tier != steps[i - 1].tier:
                attempted.fallbacks.append(f"tier {steps[i - 1].tier} -> {step.tier}")
            attempted.step = step
            for retry in range(step.deployment.max_retries + 1):
                attempted.attempts += 1
                try:
                    return await call(step), attempted
                except ProviderError as exc:
                    last = exc
                    attempted.error_type = _kind(exc)
                    attempted.fallbacks.append(f"{step.deployment.name}: {_kind(exc)}")
                    if isinstance(exc, UpstreamHTTPError) and exc.status in _CLIENT_FAULT:
                        err = InvalidRequestError(f"upstream rejected the request: {exc.upstream_message}")
                        raise DispatchFailed(err, attempted) from exc
                    if not exc.retryable or retry == step.deployment.max_retries:
                        break
                    delay = self._delay(exc, retry, config)
                    if delay is None:
                        break  # Retry-After longer than we are willing to hold the client
                    await self._sleep(delay)
            self._cooldown_until[step.deployment.name] = self._clock() + config.cooldown_s
            log.warning("deployment %s cooling down for %.0fs after: %s", step.deployment.name, config.cooldown_s, last)
        assert last is not None
        final: UpstreamError
        if isinstance(last, UpstreamTimeout):
            final = UpstreamTimeoutError("the upstream model timed out")
        else:
            final = UpstreamError(f"all upstream deployments failed; last error: {last}")
        raise DispatchFailed(final, attempted) from last

    @staticmethod
    def _delay(exc: ProviderError, retry: int, config: DispatchConfig) -> float | None:
        if isinstance(exc, UpstreamHTTPError) and exc.retry_after is not None:
            wait: float = exc.retry_after
            return wait if wait <= config.max_retry_after_s else None
        backoff: float = min(config.backoff_max_s, config.backoff_base_s * 2.0**retry)
        return backoff * (0.5 + random.random() / 2)  # jitter: replicas must not retry in lockstep


def _kind(exc: ProviderError) -> str:
    if isinstance(exc, UpstreamHTTPError):
        return f"http_{exc.status}"
    return type(exc).__name__.removeprefix("Upstream").lower() or "error"
