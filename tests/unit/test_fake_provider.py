"""The built-in fake provider, in process: the fake upstream's behaviours through the same checks
an OpenAI-compatible server's answers get. No socket, no thread."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import UpstreamHTTPError, UpstreamProtocolError
from gateway.policy.models import Deployment
from gateway.providers.fake import FakeProvider

ASK = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}


def fake(behaviour: str) -> Deployment:
    return Deployment(name=behaviour, model=f"fake/{behaviour}")


async def test_an_answer_is_the_behaviours_with_its_usage() -> None:
    done = await FakeProvider().complete(fake("echo"), None, ASK)
    assert done.payload["choices"][0]["message"]["content"] == "[fake echo] hello there"
    assert done.usage is not None and done.usage.completion_tokens > 0


async def test_a_stream_is_relayed_as_it_is_sent_and_ended_as_openai_ends_one() -> None:
    stream = await FakeProvider().open_stream(fake("echo"), None, ASK, include_usage=True)
    events = [event async for event in stream.events]
    assert events[-1] == b"data: [DONE]\n\n" and stream.done
    assert b'"usage"' in events[-2] and stream.usage is not None and not stream.usage.estimated
    assert stream.finish_reason == "stop"


async def test_errors_are_the_upstreams_status_with_its_retry_after() -> None:
    with pytest.raises(UpstreamHTTPError) as failed:
        await FakeProvider().complete(fake("rate-limited-429-7"), None, ASK)
    assert failed.value.status == 429 and failed.value.retry_after == 7
    with pytest.raises(UpstreamHTTPError) as failed:
        await FakeProvider().complete(fake("error-echo-auth-500"), "sk-provider-secret", ASK)
    assert failed.value.status == 500 and "sk-provider-secret" not in str(failed.value)
    with pytest.raises(UpstreamProtocolError):
        await FakeProvider().complete(fake("malformed-stream"), None, ASK)


async def test_leaving_a_never_ending_stream_stops_the_fake() -> None:
    before = asyncio.all_tasks()
    stream = await FakeProvider().open_stream(fake("never-ending-stream"), None, ASK, include_usage=False)
    async for _ in stream.events:
        break
    await stream.events.aclose()  # type: ignore[attr-defined]
    for _ in range(10):  # the cancelled app unwinds its task group
        if not [t for t in asyncio.all_tasks() - before if not t.done()]:
            break
        await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() - before if not t.done()] == [] and not stream.done


async def test_embeddings() -> None:
    done = await FakeProvider().embed(fake("any"), None, {"input": ["a", "b"], "dimensions": 8})
    assert [len(d["embedding"]) for d in done.payload["data"]] == [8, 8]
