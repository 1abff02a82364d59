"""The gateway's own spans (GenAI semantic conventions): a request, its routing decision, each
upstream attempt with an escalation between them; nothing at all when tracing is off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import tracing
from gateway.chat_request import parse_chat_request
from gateway.pipeline import Answer
from gateway.routing.sessions import MemorySessions
from tests.unit.fakes import FakeClock, completion
from tests.unit.test_sessions import AUTO, world


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter)
    yield exporter
    tracing.reset()


async def _escalating_request(tmp_path: Path) -> Answer:
    w = world(tmp_path, MemorySessions(FakeClock()), AUTO + "escalate: {on: [invalid_json]}\n")
    w.provider.scripts["local-a"] = [completion("not json")]
    w.provider.scripts["mid-a"] = [completion('{"a": 1}')]
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"},
    }
    async with w.pipeline.call("chat", "", "127.0.0.1") as call:
        answer = await w.pipeline.run(call, parse_chat_request(body))
    w.engine.dispose()
    assert isinstance(answer, Answer)
    return answer


async def test_a_request_its_route_and_each_attempt_are_spans(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    answer = await _escalating_request(tmp_path)
    found = {s.name: s for s in spans.get_finished_spans()}
    assert set(found) == {"tierwise chat", "chat a", "chat b"}  # the request; local-a's and mid-a's models
    request, first, second = found["tierwise chat"], found["chat a"], found["chat b"]
    assert first.parent is not None and first.parent.span_id == request.context.span_id
    assert second.parent is not None and second.parent.span_id == request.context.span_id
    assert first.attributes is not None and second.attributes is not None and request.attributes is not None
    assert first.attributes["gen_ai.operation.name"] == "chat" and first.attributes["gen_ai.provider.name"] == "openai"
    assert first.attributes["tierwise.deployment"] == "local-a" and second.attributes["tierwise.deployment"] == "mid-a"
    assert second.attributes["server.address"] == "mid.invalid"
    assert second.attributes["gen_ai.usage.input_tokens"] > 0
    assert request.attributes["tierwise.request_id"] == answer.headers["x-tierwise-request-id"]
    assert request.attributes["tierwise.tier"] == "mid" and request.attributes["gen_ai.request.model"] == "auto"
    route, escalate = (next(e for e in request.events if e.name == n) for n in ("tierwise.route", "tierwise.escalate"))
    assert route.attributes is not None and route.attributes["tierwise.router.tier"] == "local"
    assert escalate.attributes is not None and list(escalate.attributes["tierwise.reasons"]) == ["invalid_json"]


async def test_off_by_default_no_span_is_made(tmp_path: Path) -> None:
    assert not tracing.enabled()
    answer = await _escalating_request(tmp_path)
    assert answer.headers["x-tierwise-tier"] == "mid"


async def test_a_sample_ratio_traces_that_share_of_requests_whole(tmp_path: Path) -> None:
    for ratio, traced in ((0.0, set()), (1.0, {"tierwise chat", "chat a", "chat b"})):
        exporter = InMemorySpanExporter()  # (one shut down with its provider exports nothing)
        tracing.configure(exporter=exporter, sample_ratio=ratio)
        try:
            (tmp_path / str(ratio)).mkdir()
            await _escalating_request(tmp_path / str(ratio))
        finally:
            tracing.reset()
        assert {s.name for s in exporter.get_finished_spans()} == traced, ratio
