"""Every dependency of a running gateway, built explicitly from the settings and the policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
from sqlalchemy.engine import Engine

from gateway.availability import Availability
from gateway.clock import Clock
from gateway.dispatch import Dispatcher
from gateway.keys import Guard, KeyStore, Limiter, MemoryLimiter
from gateway.ledger import LedgerWriter, create_schema, make_engine
from gateway.ledger.spend import spend_by_key
from gateway.local.health import probe_once
from gateway.metrics import MeteredLedger, Metrics
from gateway.pipeline import Pipeline
from gateway.pipeline.call import probe_recorder
from gateway.pipeline.embeddings import EmbeddingsFlow
from gateway.policy.loader import LoadedPolicy, load_policy
from gateway.policy.models import Policy
from gateway.policy.store import PolicyStore
from gateway.providers.base import Provider
from gateway.providers.fake import FakeProvider
from gateway.providers.openai_compatible import OpenAICompatibleProvider
from gateway.quality.sampler import QualitySampler
from gateway.quality.snapshots import record_snapshot
from gateway.redact import install_redaction
from gateway.routing.resolve import Resolver, RouterLike
from gateway.routing.sessions import MemorySessions, Sessions
from gateway.settings import Settings
from gateway.state import GatewayState

__all__ = ["RouterFactory", "build_state", "reconcile_budgets"]

log = logging.getLogger("tierwise")

RouterFactory = Callable[[LoadedPolicy], RouterLike | None]


async def build_state(
    settings: Settings, router: RouterLike | None, router_factory: RouterFactory | None, clock: Clock
) -> GatewayState:
    loaded = load_policy(settings.policy_path)
    store = PolicyStore(loaded)
    openai_compatible = OpenAICompatibleProvider()
    providers: dict[str, Provider] = {"openai_compatible": openai_compatible}

    def refresh(new: LoadedPolicy) -> None:
        if _uses(new.policy, "fake") and "fake" not in providers:
            providers["fake"] = FakeProvider()
            log.warning(
                "FAKE PROVIDER: deployments %s answer from the built-in fake (in process); their replies are"
                " not a model's",
                [d.name for d in new.policy.all_deployments if d.provider == "fake"],
            )
        if _uses(new.policy, "litellm"):
            from gateway.providers.litellm_provider import LitellmProvider  # noqa: PLC0415 - import only if used

            provider = providers.get("litellm")
            if not isinstance(provider, LitellmProvider):
                provider = providers["litellm"] = LitellmProvider()
            provider.self_check(d for d in new.policy.all_deployments if d.provider == "litellm")

    def secrets(new: LoadedPolicy) -> list[str]:
        names = {d.api_key_env for d in new.policy.all_deployments if d.api_key_env}
        found = [settings.credential(n) for n in names]
        master = settings.master_key.get_secret_value() if settings.master_key else None
        return [s for s in [*found, master] if s]

    redaction = install_redaction(secrets(loaded))

    def refresh_secrets(new: LoadedPolicy) -> None:
        redaction.secrets = secrets(new)

    refresh(loaded)
    store.on_change(refresh)
    store.on_change(refresh_secrets)

    engine = make_engine(settings.database_url)
    await asyncio.to_thread(create_schema, engine)
    ledger = LedgerWriter(
        engine,
        settings.spool_dir,
        batch_size=settings.ledger_batch_size,
        interval_s=settings.ledger_flush_interval_s,
        retention_days=settings.ledger_retention_days,
        merge_interval_s=settings.ledger_merge_interval_s,
    )
    # Probes of failing deployments, like shadow and judge calls, are the gateway's own: the
    # ledger has them, the metrics count clients' requests.
    dispatcher = Dispatcher(
        providers, settings.credential, clock, on_probe=probe_recorder(ledger, lambda: store.current, clock)
    )
    availability = Availability(dispatcher)

    if router is None and router_factory is not None and settings.load_router:
        router = await asyncio.to_thread(router_factory, loaded)
    guard = await _build_guard(settings, engine, loaded.policy, clock)
    resolver = Resolver(
        router,
        availability.tier_available,
        availability.deployment_available,
        _sessions(settings, clock),
        availability.has_key,
    )
    metrics = Metrics(lambda: ledger.queued, ledger.journal.waiting_bytes)
    # The gateway's own shadow and judge calls go to the ledger only: the metrics count clients'
    # (and how many samples were judged, skipped or failed).
    sampler = QualitySampler(
        dispatcher=dispatcher,
        availability=availability,
        ledger=ledger,
        limiter=guard.limiter,
        engine=engine,
        router=router,
        clock=clock,
        outcomes=metrics.sample_outcome,
    )
    pipeline = Pipeline(
        policy=store,
        resolver=resolver,
        dispatcher=dispatcher,
        availability=availability,
        guard=guard,
        ledger=MeteredLedger(ledger, metrics),
        clock=clock,
        sampler=sampler,
        refused=metrics.unauthenticated_refusal,
    )
    await asyncio.to_thread(record_snapshot, engine, loaded)

    def snapshot(new: LoadedPolicy) -> None:
        # Off the event loop; the executor holds the work until it is done.
        asyncio.get_running_loop().run_in_executor(None, record_snapshot, engine, new)

    store.on_change(snapshot)
    embeddings = EmbeddingsFlow(pipeline)
    state = GatewayState(
        settings=settings,
        policy=store,
        dispatcher=dispatcher,
        availability=availability,
        guard=guard,
        ledger=ledger,
        pipeline=pipeline,
        providers=providers,
        sampler=sampler,
        redaction=redaction,
        metrics=metrics,
        embeddings=embeddings,
        router=router,
    )
    async with httpx.AsyncClient() as client:
        await probe_once(store, availability, client)
    _log_availability(availability, loaded.policy)
    _log_unpriced_caching(loaded)
    return state


async def _build_guard(settings: Settings, engine: Engine, policy: Policy, clock: Clock) -> Guard:
    store = KeyStore(engine, clock=clock)  # its table comes with the ledger's migrations
    limiter: Limiter
    if settings.redis_url:
        from gateway.keys.redis_limiter import RedisLimiter  # noqa: PLC0415

        limiter = RedisLimiter(settings.redis_url)
    else:
        limiter = MemoryLimiter()
    master = settings.master_key.get_secret_value() if settings.master_key else None
    guard = Guard(store, limiter, master, fail_open=policy.limits.on_limiter_error == "open", clock=clock)
    if not await asyncio.to_thread(store.any_keys):
        log.warning("no API keys configured: the gateway runs open and serves loopback clients only")
    try:
        now = clock.now()
        for key_id, day, month in await asyncio.to_thread(spend_by_key, engine, now):
            await limiter.seed(key_id, day, month, now)
    except Exception as exc:  # the limits store may be down at start; requests will say so
        log.error("could not seed budget counters from the ledger: %s", type(exc).__name__)
    return guard


def _sessions(settings: Settings, clock: Clock) -> Sessions:
    """Conversations' tiers where the limits are: Redis when replicas share them, else here."""
    if settings.redis_url:
        from gateway.routing.redis_sessions import RedisSessions  # noqa: PLC0415

        return RedisSessions(settings.redis_url)
    return MemorySessions(clock)


async def reconcile_budgets(state: GatewayState, interval_s: float = 2.0) -> None:
    engine = state.ledger.engine
    while True:
        await asyncio.sleep(interval_s)
        ledger = state.ledger
        # Only once the database has every row this process wrote: the counters are set from it.
        if state.guard.unsettled and not (ledger.queued or ledger.spooled or ledger.degraded):
            await state.guard.reconcile(lambda now: spend_by_key(engine, now))


def _uses(policy: Policy, provider: str) -> bool:
    return any(d.provider == provider for d in policy.all_deployments)


def _log_unpriced_caching(loaded: LoadedPolicy) -> None:
    unpriced = loaded.caching_unpriced()
    if unpriced:
        log.warning(
            "deployments %s have no cache-read price (litellm's map, or price.cached_input_per_1m): "
            "their cached tokens are priced at the full input rate",
            ", ".join(unpriced),
        )


def _log_availability(availability: Availability, policy: Policy) -> None:
    for tier in policy.tiers:
        for dep in tier.deployments:
            reason = availability.unavailable_reason(dep.name, policy)
            if reason:
                log.warning("deployment %s (tier %s) is unavailable: %s", dep.name, tier.name, reason)
        if not availability.tier_available(policy, tier.name):
            log.warning("tier %s is unavailable; routing skips it", tier.name)
    available = [t.name for t in policy.tiers if availability.tier_available(policy, t.name)]
    if len(available) == 1:
        keys = sorted({d.api_key_env for t in policy.tiers for d in t.deployments if d.api_key_env})
        log.warning(
            "only tier %s is available: every request will be served by it (set %s to enable the others)",
            available[0],
            " or ".join(keys) or "the missing provider keys",
        )
    elif not available:
        log.error("no tier is available: requests will fail with 503 until a deployment is reachable")
