"""The app factory: builds every dependency explicitly and hangs it on ``app.state.tierwise``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gateway import tracing
from gateway.api import admin, chat, embeddings, feedback, messages, meta, openai_responses
from gateway.api import metrics as metrics_api
from gateway.api.browser import browser_refusal
from gateway.api.openapi import install_openapi
from gateway.availability import Availability
from gateway.clock import Clock, SystemClock
from gateway.dispatch import Dispatcher
from gateway.errors import GatewayError, envelope
from gateway.keys import Guard, KeyStore, Limiter, MemoryLimiter
from gateway.ledger import LedgerWriter, create_schema, make_engine
from gateway.ledger.spend import spend_by_key
from gateway.local.health import probe_once, watch_local_servers
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
from gateway.redact import install_redaction, uninstall_redaction
from gateway.routing.resolve import Resolver, RouterLike
from gateway.routing.sessions import MemorySessions, Sessions
from gateway.settings import Settings
from gateway.state import GatewayState

__all__ = ["create_app"]

log = logging.getLogger("tierwise")

RouterFactory = Callable[[LoadedPolicy], RouterLike | None]

CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
EMBEDDINGS_PATH = "/v1/embeddings"


def create_app(
    settings: Settings | None = None,
    *,
    router: RouterLike | None = None,
    router_factory: RouterFactory | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the gateway.

    ``router`` injects a ready router (tests share one, since loading the encoder takes
    seconds); ``router_factory`` builds it from the policy at start. Nothing is loaded
    before the app starts.
    """
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.otel_endpoint:
            tracing.configure(endpoint=settings.otel_endpoint, sample_ratio=settings.otel_sample_ratio)
            log.info("tracing: spans go to %s/v1/traces", settings.otel_endpoint.rstrip("/"))
        state = await _build_state(settings, router, router_factory, clock or SystemClock())
        app.state.tierwise = state
        tasks = [
            asyncio.create_task(state.policy.watch(settings.policy_poll_interval_s), name="policy-watch"),
            asyncio.create_task(
                watch_local_servers(state.policy, state.availability, settings.local.probe_interval_s),
                name="local-health",
            ),
            asyncio.create_task(_reconcile_budgets(state), name="budget-reconcile"),
            asyncio.create_task(state.sampler.run(), name="quality-sampler"),
            asyncio.create_task(state.metrics.watch(), name="metrics-gauges"),
            asyncio.create_task(state.metrics.watch_loop(), name="event-loop-lag"),
        ]
        state.policy.install_sighup()
        state.ledger.start()
        # What start-up loaded (litellm's tables, the router, the SDKs' types) lives as long as
        # the process: frozen out of the collector's sight, a full collection scans only what
        # requests made (under load, full collections of ~230k objects took ~5% of the CPU).
        # Young collections every 20,000 allocations rather than 700 (a request makes hundreds):
        # -6% CPU a request under load, for at most a few MB of cyclic garbage kept a bit longer.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await state.ledger.close()  # every queued row is written (or left in the journal) before exit
            for provider in {id(p): p for p in state.providers.values()}.values():
                await provider.aclose()
            await state.guard.limiter.aclose()
            if state.pipeline.resolver.sessions is not None:
                await state.pipeline.resolver.sessions.aclose()
            state.ledger.engine.dispose()
            uninstall_redaction(state.redaction)
            if settings.otel_endpoint:
                tracing.reset()  # what is buffered is sent

    telemetry: TelemetryConfig | None = None if settings.otel else {"tracing": False, "metrics": False, "logs": False}
    app = _Gateway(
        title="Tierwise",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by install_openapi, behind a key
        telemetry=telemetry,
    )
    # Served from ``_Gateway.__call__``; registered so other methods on the paths get a 405.
    for path, handler in _DIRECT.items():
        app.add_route(path, handler, methods=["POST"])
    app.add_route("/metrics", metrics_api.metrics_endpoint, methods=["GET"])
    app.include_router(meta.router)
    app.include_router(admin.router)
    app.include_router(feedback.router)
    install_openapi(app)
    _install_error_handlers(app)
    return app


async def _build_state(
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


async def _reconcile_budgets(state: GatewayState, interval_s: float = 2.0) -> None:
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


async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.to_envelope(), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)  # the trace goes to our log, never to the client
    return JSONResponse(
        envelope("internal error in the gateway", "server_error", None, "internal_error"), status_code=500
    )


# The model-calling endpoints, served straight from ``_Gateway.__call__``.
_DIRECT: dict[str, Callable[[Request], Awaitable[Response]]] = {
    CHAT_PATH: chat.chat_completions,
    RESPONSES_PATH: openai_responses.create_response,
    MESSAGES_PATH: messages.create_message,
    EMBEDDINGS_PATH: embeddings.create_embeddings,
}


class _Gateway(FastAPI):
    """FastAPI, with the model-calling ``POST`` endpoints (chat completions, responses, messages,
    embeddings) served straight from ``__call__``.

    Each is a plain handler that reads and checks its own body; going through the full
    middleware stack and router first cost ~10% of the gateway's CPU per request (py-spy), and
    0.13 ms of CPU a request on /v1/responses (0.64 -> 0.51 ms, measured with wrk).
    Errors get the same handlers as every other route.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state: GatewayState = self.state.tierwise
            refusal = browser_refusal(
                scope["headers"], state.settings.allowed_origins, not state.guard.store.last_any_keys()
            )
            if refusal is not None:
                await JSONResponse(refusal.to_envelope(), status_code=refusal.status_code)(scope, receive, send)
                return
        handler = _DIRECT.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response: Response = await handler(request)
        except GatewayError as exc:
            response = await _gateway_error(request, exc)
        except Exception as exc:
            response = await _unexpected(request, exc)
        await response(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in err["loc"])
        return JSONResponse(envelope(f"{loc}: {err['msg']}", "invalid_request_error", loc, None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(
            envelope(str(exc.detail), "invalid_request_error", None, code),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(Exception, _unexpected)
