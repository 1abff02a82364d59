"""Spans of our own in OpenTelemetry's GenAI semantic conventions; off unless configured.

    tierwise {api}            the client's request, from its plan to its settlement: route,
                              tier, deployment, tokens, cost; the routing decision and each
                              escalation as events on it
    {operation} {model}       each upstream attempt, a client span (``gen_ai.*`` attributes)
    tierwise judge            a sampled request's shadow answer and judge calls

Exported over OTLP/HTTP to ``TIERWISE_OTEL_ENDPOINT`` through our own tracer provider (the
global one stays litellm's and FastAPI's to configure). Unset, no span is made: the request path
pays a check of one module attribute per place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from gateway.policy.models import Deployment

__all__ = ["attempt", "configure", "enabled", "reset", "start", "usage"]


class _State:
    tracer: trace.Tracer | None = None
    provider: Any = None  # the SDK's TracerProvider, imported only when tracing is on


_on = _State()


def configure(endpoint: str | None = None, exporter: Any = None, sample_ratio: float = 1.0) -> None:
    """Export to ``endpoint`` (an OTLP/HTTP collector's base URL) in batches, or to ``exporter``
    span by span (tests read an in-memory one). ``sample_ratio``: the share of requests traced,
    picked by trace id, each with all its spans (a recorded and exported request costs about as
    much again as the request itself: bench/README.md)."""
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

    provider = TracerProvider(
        resource=Resource.create({"service.name": "tierwise"}), sampler=ParentBased(TraceIdRatioBased(sample_ratio))
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    _on.provider, _on.tracer = provider, provider.get_tracer("tierwise")


def reset() -> None:
    """Stop tracing, sending what is buffered."""
    if _on.provider is not None:
        _on.provider.shutdown()
    _on.provider = _on.tracer = None


def enabled() -> bool:
    return _on.tracer is not None


def start(name: str, attributes: dict[str, Any]) -> Span | None:
    """An internal span the caller ends (a request's lasts until it is settled)."""
    return _on.tracer.start_span(name, attributes=attributes) if _on.tracer is not None else None


@contextlib.contextmanager
def attempt(deployment: Deployment, operation: str) -> Iterator[Span | None]:
    """One upstream call, a child of the current span; an exception marks it failed."""
    tracer = _on.tracer
    if tracer is None:
        yield None
        return
    provider = deployment.model.split("/", 1)[0] if "/" in deployment.model else "openai"
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": deployment.upstream_model,
        "tierwise.deployment": deployment.name,
    }
    if deployment.api_base:
        attributes["server.address"] = deployment.api_base.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    with tracer.start_as_current_span(
        f"{operation} {deployment.upstream_model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(StatusCode.ERROR)
            raise


def usage(span: Span | None, tokens: Any) -> None:
    """``gen_ai.usage.*`` from a ``Usage`` (None: nothing known yet, as for a stream just opened)."""
    if span is not None and tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", tokens.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", tokens.completion_tokens)
