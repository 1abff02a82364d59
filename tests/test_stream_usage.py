"""A stream ends as OpenAI ends one whatever the upstream sent: a finish_reason on the last
choice chunk and, when asked for, a usage chunk holding the counts the ledger records (exact from
the bundled llama.cpp server, estimated and marked so from an upstream that reports none)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gateway.demo.server_thread import ServerThread
from tests.conftest import GatewayFactory


def _bare_upstream() -> Starlette:
    """An OpenAI-style server whose streams end with a bare [DONE]: no finish_reason, no usage
    (as llama-cpp-python's server ends a stream a newer request interrupts)."""

    async def completions(request: Request) -> StreamingResponse:
        await request.body()

        async def events() -> AsyncIterator[bytes]:
            for delta in ({"role": "assistant"}, {"content": "Hello"}, {"content": " there, friend"}):
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "bare"}
                yield b"data: " + json.dumps({**chunk, "choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@pytest.fixture(scope="module")
def bare_upstream() -> Iterator[str]:
    server = ServerThread(_bare_upstream())
    server.start()
    yield server.url + "/v1"
    server.stop()


def _policy(base: str, model: str) -> str:
    return f"""
    version: 1
    tiers:
      - name: local
        deployments:
          - {{name: local-a, model: openai/{model}, api_base: "{base}", timeout_s: 120, max_retries: 0,
              price: {{input_per_1m: 0, output_per_1m: 0}}}}
    routes: [{{name: auto, tier: local}}]
    """


def _stream(gw_v1: str, include_usage: bool, **kw: Any) -> tuple[str, list[Any]]:
    client = openai.OpenAI(base_url=gw_v1, api_key="x", max_retries=0, timeout=120)
    options: Any = {"include_usage": True} if include_usage else openai.NOT_GIVEN
    with client.chat.completions.with_streaming_response.create(stream=True, stream_options=options, **kw) as r:
        return r.headers["x-tierwise-request-id"], list(r.parse())


@pytest.mark.parametrize(("max_tokens", "finish"), [(50, "stop"), (2, "length")])
def test_a_bare_upstream_stream_gets_a_finish_reason_and_the_estimated_usage_the_ledger_records(
    start_gateway: GatewayFactory, bare_upstream: str, max_tokens: int, finish: str
) -> None:
    gw = start_gateway(_policy(bare_upstream, "bare"))
    messages = [{"role": "user", "content": "hi"}]
    rid, chunks = _stream(gw.v1, True, model="auto", messages=messages, max_tokens=max_tokens)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == "Hello there, friend" and finishes == [finish]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].id == "c1"
    row = gw.rows("request_id = ?", (rid,))[0]
    usage = chunks[-1].usage
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert usage.completion_tokens == 5 and row["usage_estimated"] == 1  # 19 characters, ~4 a token
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_a_bare_upstream_stream_without_include_usage_gets_no_usage_chunk(
    start_gateway: GatewayFactory, bare_upstream: str
) -> None:
    gw = start_gateway(_policy(bare_upstream, "bare"))
    rid, chunks = _stream(gw.v1, False, model="auto", messages=[{"role": "user", "content": "hi"}])
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    row = gw.rows("request_id = ?", (rid,))[0]
    assert row["completion_tokens"] == 5 and row["usage_estimated"] == 1


@pytest.mark.local_model
def test_a_local_stream_reports_the_models_own_token_counts(start_gateway: GatewayFactory, smollm2: str) -> None:
    gw = start_gateway(_policy(smollm2, "smollm2-135m-instruct"))
    ask: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name two planets."}],
        "max_tokens": 24,
        "temperature": 0,
    }
    answered = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0, timeout=120).chat.completions.create(**ask)
    rid, chunks = _stream(gw.v1, True, **ask)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    row = gw.rows("request_id = ?", (rid,))[0]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert row["usage_estimated"] == 0  # counted by the model's tokenizer, not estimated
    # The same prompt as the model counted it for the non-streamed answer; one chunk per token generated.
    assert answered.usage is not None and usage.prompt_tokens == answered.usage.prompt_tokens
    assert usage.completion_tokens == sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


@pytest.mark.local_model
def test_concurrent_local_streams_each_finish_whole(start_gateway: GatewayFactory, smollm2: str) -> None:
    # llama-cpp-python's server, by default, cuts a stream short with a bare [DONE] when another
    # request arrives; the supervisor starts it to let requests wait their turn instead.
    gw = start_gateway(_policy(smollm2, "smollm2-135m-instruct"))
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key="x", max_retries=0, timeout=120)

    async def one(i: int) -> tuple[str | None, int]:
        stream = await client.chat.completions.create(
            model="auto",
            stream=True,
            max_tokens=12,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"Tell me a story about the number {i}."}],
        )
        chunks = [c async for c in stream]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        return finish, chunks[-1].usage.completion_tokens if chunks[-1].usage else 0

    async def all_of_them() -> list[tuple[str | None, int]]:
        return await asyncio.gather(*(one(i) for i in range(3)))

    results = asyncio.run(all_of_them())
    assert all(finish in ("stop", "length") and tokens > 0 for finish, tokens in results), results
    rows = gw.rows("stream = 1", wait_for=3)
    assert sorted(r["completion_tokens"] for r in rows) == sorted(t for _, t in results)
    assert not any(r["usage_estimated"] for r in rows)
