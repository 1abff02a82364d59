"""What an OpenAI-compatible upstream's bytes become before a client sees them: hostile or broken
answers and streams (found by attacking the gateway) end as the gateway's own typed errors, and a
stream reaches the translators one event at a time. No socket: the reads are given here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from gateway.errors import UpstreamProtocolError
from gateway.providers.base import UpstreamStream
from gateway.providers.openai_compatible import answer_of, http_error, sse_events
from gateway.translate.responses import ResponseEvents

SECRET = "sk-SECRET123"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def data(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


CHUNK = data({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]})


async def relayed(*reads: bytes, include_usage: bool = True) -> tuple[list[bytes], UpstreamStream]:
    async def given() -> AsyncIterator[bytes]:
        for read in reads:
            yield read

    stream = UpstreamStream(events=given(), collect=200)  # as the pipeline reads a stream
    return [e async for e in sse_events(given(), stream, include_usage, BODY, lambda done: None)], stream


async def test_an_upstreams_error_chunk_is_never_relayed() -> None:
    hostile = data({"error": {"message": f"Traceback ... 10.1.2.3 {SECRET}", "code": SECRET}})
    events, stream = await relayed(CHUNK, hostile, b"data: [DONE]\n\n")
    assert events == [CHUNK] and stream.error == "upstream_error" and not stream.done


async def test_a_chunk_with_a_null_error_field_is_an_ordinary_chunk() -> None:
    chunk = data({"id": "c1", "choices": [{"index": 0, "delta": {"content": "hi"}}], "error": None})
    events, stream = await relayed(chunk, b"data: [DONE]\n\n")
    assert events[0] == chunk and stream.error is None and stream.done


@pytest.mark.parametrize(
    "broken",
    [
        b"data: [1, 2]\n\n",  # JSON, but not a chunk
        data({"choices": [{"index": 0, "delta": "text"}]}),  # a delta that is not an object
        data({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "zz", "function": {}}]}}]}),
    ],
    ids=["not-an-object", "delta-a-string", "tool-call-index-a-word"],
)
async def test_a_chunk_not_of_openais_types_ends_the_stream_as_malformed(broken: bytes) -> None:
    events, stream = await relayed(CHUNK, broken, b"data: [DONE]\n\n")
    assert events == [CHUNK] and stream.error == "malformed_stream"


async def test_the_end_the_gateway_adds_is_one_event_a_yield_and_a_responses_client_sees_it_complete() -> None:
    """An upstream that sends neither a finish reason nor usage: the gateway adds both before
    [DONE], each its own event, so a translator that reads one event at a time completes."""
    events, stream = await relayed(CHUNK, b"data: [DONE]\n\n")
    assert stream.done and [e.count(b"data:") for e in events] == [1, 1, 1, 1]
    assert events[-1] == b"data: [DONE]\n\n" and b'"usage"' in events[-2]
    translator = ResponseEvents(BODY, "resp_1", 0)
    out = b"".join([*translator.start(), *(o for e in events for o in translator.feed(e))])
    assert b"response.completed" in out


def test_an_error_bodys_key_is_redacted_before_it_is_cut() -> None:
    body = b"x" * 192 + b" " + SECRET.encode() + b" tail"  # the key straddles the 200th character
    logged = http_error(400, "Bad Request", body, SECRET, None).detail
    assert "sk-SECR" not in logged


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (orjson.dumps({"error": {"message": f"max_tokens is too large ({SECRET})"}}), "max_tokens is too large"),
        (orjson.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}), "bad"),
        (b"<html><body>502 nginx at 10.1.2.3</body></html>", None),
        (b"Traceback (most recent call last):\n  File /srv/app.py", None),
    ],
    ids=["openai-json", "anthropic-json", "html", "traceback"],
)
def test_a_client_may_read_only_the_message_of_a_json_error(body: bytes, said: str | None) -> None:
    err = http_error(400, "Bad Request", body, SECRET, "3")
    assert err.retry_after == 3 and (err.said is None if said is None else said in (err.said or ""))
    assert SECRET not in (err.said or "") and SECRET not in err.detail


@pytest.mark.parametrize(
    "answer",
    [{"choices": "text"}, {"choices": [{"message": "text"}]}, {"choices": None}, {"choices": [7]}],
    ids=["choices-a-string", "message-a-string", "choices-null", "choice-a-number"],
)
def test_an_answer_the_translators_cannot_read_is_a_protocol_error(answer: dict[str, object]) -> None:
    with pytest.raises(UpstreamProtocolError):
        answer_of(orjson.dumps(answer), "choices")
