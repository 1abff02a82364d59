"""The app factory: the gateway's state (built in ``wiring``) on ``app.state.tierwise``, its
background tasks and shutdown, its routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from gateway import tracing
from gateway.api import admin, feedback, meta
from gateway.api import metrics as metrics_api
from gateway.api.errors import install_error_handlers
from gateway.api.fast_path import DIRECT, Gateway
from gateway.api.openapi import install_openapi
from gateway.clock import Clock, SystemClock
from gateway.local.health import watch_local_servers
from gateway.redact import uninstall_redaction
from gateway.routing.resolve import RouterLike
from gateway.settings import Settings
from gateway.wiring import RouterFactory, build_state, reconcile_budgets

__all__ = ["create_app"]

log = logging.getLogger("tierwise")


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
        state = await build_state(settings, router, router_factory, clock or SystemClock())
        app.state.tierwise = state
        tasks = [
            asyncio.create_task(state.policy.watch(settings.policy_poll_interval_s), name="policy-watch"),
            asyncio.create_task(
                watch_local_servers(state.policy, state.availability, settings.local.probe_interval_s),
                name="local-health",
            ),
            asyncio.create_task(reconcile_budgets(state), name="budget-reconcile"),
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
    app = Gateway(
        title="Tierwise",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by install_openapi, behind a key
        telemetry=telemetry,
    )
    # Served from ``Gateway.__call__``; registered so other methods on the paths get a 405.
    for path, handler in DIRECT.items():
        app.add_route(path, handler, methods=["POST"])
    app.add_route("/metrics", metrics_api.metrics_endpoint, methods=["GET"])
    app.include_router(meta.router)
    app.include_router(admin.router)
    app.include_router(feedback.router)
    install_openapi(app)
    install_error_handlers(app)
    return app
