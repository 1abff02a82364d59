"""Prometheus metrics, observed from each request's ledger row, so they agree with the ledger.

:class:`MeteredLedger` stands where the pipeline writes its rows: it hands each row to the ledger
writer, then counts it. Labels are the policy's own names (route, tier, deployment), the API and
the status class, all few; never a key, a client-chosen model name or anything of a prompt.

Under ``tierwise serve --workers N`` every worker writes its values to the directory named by
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, set up by the serve command)
and a scrape of any worker adds them all up.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from gateway.ledger.models import LedgerRow
from gateway.pipeline.accounting import RowSink

__all__ = ["CONTENT_TYPE", "MeteredLedger", "Metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_REQUEST: Final = ("api", "route", "tier", "deployment", "status")
_LAG: Final = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# A `_created` series beside every counter doubles the scrape and tells nobody anything.
disable_created_metrics()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    # prometheus_client's own variable (not a Tierwise setting): it picks the storage at import.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass(frozen=True, slots=True)
class _Children:
    requests: Counter
    latency: Histogram
    ttft: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter
    cache_read_tokens: Counter
    cache_write_tokens: Counter
    reasoning_tokens: Counter
    cost: Counter
    frontier_cost: Counter
    fallbacks: Counter
    escalations: Counter


class Metrics:
    def __init__(self, queue_depth: Callable[[], int], spool_bytes: Callable[[], int]) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tierwise_requests", "Requests answered, by API, route, tier, status class", _REQUEST, registry=r
        )
        self.latency = Histogram(
            "tierwise_request_duration_seconds", "Arrival to last byte", ("api", "tier"), buckets=_SECONDS, registry=r
        )
        self.ttft = Histogram(
            "tierwise_time_to_first_token_seconds",
            "Arrival to first upstream byte",
            ("api", "tier"),
            buckets=_SECONDS,
            registry=r,
        )
        self.tokens = Counter(
            "tierwise_tokens",
            "Tokens billed. kind: prompt (all input), completion (all output), and the parts of those billed"
            " at other rates: cache_read and cache_write (of prompt), reasoning (of completion)",
            ("api", "tier", "deployment", "kind"),
            registry=r,
        )
        self.cost = Counter("tierwise_cost_usd", "What requests cost", ("api", "tier", "deployment"), registry=r)
        self.frontier_cost = Counter(
            "tierwise_frontier_cost_usd",
            "What the same tokens would have cost on the frontier tier",
            ("api",),
            registry=r,
        )
        self.fallbacks = Counter(
            "tierwise_fallbacks",
            "Requests served off their path (retry, other deployment, other tier)",
            ("api", "tier"),
            registry=r,
        )
        self.escalations = Counter(
            "tierwise_escalations", "Requests answered more than once", ("api", "tier"), registry=r
        )
        self.router = Counter("tierwise_router_decisions", "The router's choices", ("route", "router_tier"), registry=r)
        self.samples = Counter(
            "tierwise_quality_samples",
            "Sampled requests by outcome: judged, unparseable (the judge's verdict could not be read), skipped"
            " (queue full or the day's cap reached) or failed",
            ("outcome",),
            registry=r,
        )
        self.unauthenticated = Counter(
            "tierwise_unauthenticated_refusals",
            "Requests refused before authentication (401), by API; the ledger keeps one a client address a minute",
            ("api",),
            registry=r,
        )
        self.queue = Gauge(
            "tierwise_ledger_queue_depth", "Ledger rows waiting to be written", registry=r, multiprocess_mode="livesum"
        )
        self.spool = Gauge(
            "tierwise_ledger_spool_bytes", "Size of the ledger's spool file (rows the database has not taken)",
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        # Every stream's next chunk waits behind whatever else the loop is running: the first
        # thing to read when streams slow down under load.
        self.loop_lag = Histogram(
            "tierwise_event_loop_lag_seconds",
            "How late the event loop ran a timer set for 100 ms from now",
            buckets=_LAG,
            registry=r,
        )
        self._queue_depth = queue_depth
        self._spool_bytes = spool_bytes
        self._children: dict[tuple[str, ...], _Children] = {}

    def observe(self, row: LedgerRow) -> None:
        key = (row.api, row.route or "", row.tier or "", row.deployment or "", f"{row.status_code // 100}xx")
        c = self._children.get(key) or self._bind(key)
        c.requests.inc()
        c.latency.observe(row.latency_ms / 1000)
        if row.ttft_ms is not None:
            c.ttft.observe(row.ttft_ms / 1000)
        if row.prompt_tokens:
            c.prompt_tokens.inc(row.prompt_tokens)
        if row.completion_tokens:
            c.completion_tokens.inc(row.completion_tokens)
        if row.cache_read_tokens:
            c.cache_read_tokens.inc(row.cache_read_tokens)
        if row.cache_write_tokens:
            c.cache_write_tokens.inc(row.cache_write_tokens)
        if row.reasoning_tokens:
            c.reasoning_tokens.inc(row.reasoning_tokens)
        if row.cost_usd:
            c.cost.inc(row.cost_usd)
        if row.frontier_cost_usd:
            c.frontier_cost.inc(row.frontier_cost_usd)
        if row.fallbacks:
            c.fallbacks.inc()
        if row.steps and len(orjson.loads(row.steps)) > 1:
            c.escalations.inc()
        if row.router_tier:
            self.router.labels(row.route or "", row.router_tier).inc()

    def _bind(self, key: tuple[str, str, str, str, str]) -> _Children:
        """The series of one label set, looked up once: a lookup takes a lock and builds a key."""
        api, _, tier, dep, _ = key
        c = _Children(
            self.requests.labels(*key),
            self.latency.labels(api, tier),
            self.ttft.labels(api, tier),
            self.tokens.labels(api, tier, dep, "prompt"),
            self.tokens.labels(api, tier, dep, "completion"),
            self.tokens.labels(api, tier, dep, "cache_read"),
            self.tokens.labels(api, tier, dep, "cache_write"),
            self.tokens.labels(api, tier, dep, "reasoning"),
            self.cost.labels(api, tier, dep),
            self.frontier_cost.labels(api),
            self.fallbacks.labels(api, tier),
            self.escalations.labels(api, tier),
        )
        self._children[key] = c
        return c

    def unauthenticated_refusal(self, api: str) -> None:
        self.unauthenticated.labels(api).inc()

    def sample_outcome(self, outcome: str) -> None:
        self.samples.labels(outcome).inc()

    def refresh_gauges(self) -> None:
        self.queue.set(self._queue_depth())
        self.spool.set(self._spool_bytes())

    async def watch(self, interval_s: float = 1.0) -> None:
        """Keep this worker's gauges current (a scrape may be served by another worker)."""
        while True:
            self.refresh_gauges()
            await asyncio.sleep(interval_s)

    async def watch_loop(
        self,
        interval_s: float = 0.1,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] | None = None,
    ) -> None:
        """Observe how late each timer of ``interval_s`` fires: the event loop's lag."""
        now = now or asyncio.get_running_loop().time
        while True:
            due = now() + interval_s
            await sleep(interval_s)
            self.loop_lag.observe(max(0.0, now() - due))

    def exposition(self) -> bytes:
        self.refresh_gauges()
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # all workers' values
        return generate_latest(registry)


class MeteredLedger:
    """The pipeline's row sink: the ledger writer first, then the metrics."""

    def __init__(self, ledger: RowSink, metrics: Metrics) -> None:
        self.ledger = ledger
        self.metrics = metrics

    def record(self, row: LedgerRow) -> None:
        self.ledger.record(row)
        self.metrics.observe(row)
