"""Agent traffic through the litellm path: tools, tool results with ``is_error``, streams, on all
three APIs, against a loopback upstream that answers and bills caching as Anthropic's API does.
The cost in the ledger is Anthropic's formula on the tokens the upstream reported."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from gateway.demo.server_thread import ServerThread
from tests.caching_upstream import CachingUpstream
from tests.conftest import REPO, Gateway, GatewayFactory

# claude-haiku-4-5 in litellm's price map: USD per token
INPUT, OUTPUT, CACHE_READ, CACHE_WRITE, CACHE_WRITE_1H = 1e-6, 5e-6, 1e-7, 1.25e-6, 2e-6

EDIT = {
    "name": "edit_file",
    "description": "Edit a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}
OPENAI_EDIT = {"type": "function", "function": {"name": "edit_file", "parameters": EDIT["input_schema"]}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[CachingUpstream]:
    up = CachingUpstream()
    server = ServerThread(up.app)
    up.url = server.start()
    yield up
    server.stop()


def claude_policy(url: str, extra: str = "") -> str:
    """One tier: claude-haiku-4-5 on the caching upstream, through litellm; routes agent and best."""
    return f"""
        version: 1
        tiers:
          - name: frontier
            deployments:
              - {{name: claude, model: anthropic/claude-haiku-4-5, api_base: "{url}",
                  api_key_env: TIERWISE_TEST_ANTHROPIC_KEY, max_retries: 0}}
        routes:
          - {{name: agent, tier: frontier}}
          - {{name: best, tier: frontier}}
        {extra}
        """


@pytest.fixture
def gw(start_gateway: GatewayFactory, upstream: CachingUpstream, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("TIERWISE_TEST_ANTHROPIC_KEY", "sk-ant-test")
    return start_gateway(claude_policy(upstream.url))


def _row(gw: Gateway, request_id: str) -> dict[str, Any]:
    return gw.rows("request_id = ?", (request_id,))[0]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tools_reach_claude_through_litellm_on_chat(gw: Gateway, stream: bool) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key="none", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "fix the bug"}]
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            model="agent", messages=messages, tools=[OPENAI_EDIT], stream=True
        )
        calls = [c for chunk in raw.parse() for choice in chunk.choices for c in choice.delta.tool_calls or []]
        assert calls and calls[0].function and calls[0].function.name == "edit_file"
    else:
        raw = client.chat.completions.with_raw_response.create(model="agent", messages=messages, tools=[OPENAI_EDIT])
        answer = raw.parse()
        call = (answer.choices[0].message.tool_calls or [])[0]
        assert call.function.name == "edit_file" and '"main.py"' in call.function.arguments  # type: ignore[union-attr]
    assert _row(gw, raw.headers["x-tierwise-request-id"])["status_code"] == 200


def test_tools_reach_claude_through_litellm_on_responses(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=gw.v1, api_key="none", max_retries=0)
    tool = {"type": "function", "name": "edit_file", "parameters": EDIT["input_schema"]}
    response = client.responses.create(model="agent", input="fix the bug", tools=[tool])  # type: ignore[list-item]
    assert [item.type for item in response.output] == ["function_call"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_coding_agent_turn_on_messages_with_a_failed_tool_result(
    gw: Gateway, upstream: CachingUpstream, stream: bool
) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    messages: list[Any] = [
        {"role": "user", "content": "fix the bug"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "edit_file", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "no such file", "is_error": True}],
        },
    ]
    if stream:
        with client.messages.stream(model="agent", max_tokens=256, tools=[EDIT], messages=messages) as s:  # type: ignore[list-item]
            message = s.get_final_message()
    else:
        message = client.messages.create(model="agent", max_tokens=256, tools=[EDIT], messages=messages)  # type: ignore[list-item]
    assert message.stop_reason == "end_turn" and message.content[0].type == "text"
    sent = upstream.requests[-1]
    result = sent["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1"
    assert result["content"] in ("no such file", [{"type": "text", "text": "no such file"}])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_is_error_reaches_claude_on_the_failed_result_only(
    gw: Gateway, upstream: CachingUpstream, stream: bool
) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    failed = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "no such file", "is_error": True}
    worked = {"type": "tool_result", "tool_use_id": "toolu_2", "content": "def main(): ..."}
    calls = [
        {"type": "tool_use", "id": "toolu_1", "name": "edit_file", "input": {}},
        {"type": "tool_use", "id": "toolu_2", "name": "edit_file", "input": {}},
    ]
    messages: list[Any] = [
        {"role": "user", "content": "fix the bug"},
        {"role": "assistant", "content": calls},
        {"role": "user", "content": [failed, worked]},
    ]
    if stream:
        with client.messages.stream(model="agent", max_tokens=256, messages=messages) as s:
            s.get_final_message()
    else:
        client.messages.create(model="agent", max_tokens=256, messages=messages)
    results = upstream.requests[-1]["messages"][-1]["content"]
    assert [(r["tool_use_id"], r.get("is_error")) for r in results] == [("toolu_1", True), ("toolu_2", None)]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_extended_thinking_reaches_claude_and_its_signed_thoughts_go_round(
    gw: Gateway, upstream: CachingUpstream, stream: bool
) -> None:
    """A thinking turn that calls a tool must send its thinking back, signature intact."""
    client = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    messages: list[Any] = [{"role": "user", "content": "fix the bug"}]

    def turn() -> Any:
        kwargs: dict[str, Any] = {"model": "agent", "max_tokens": 2048, "tools": [EDIT], "thinking": thinking}
        if stream:
            with client.messages.stream(**kwargs, messages=messages) as s:
                return s.get_final_message()
        return client.messages.create(**kwargs, messages=messages)

    first = turn()
    assert upstream.requests[-1]["thinking"] == thinking
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    thought = first.content[0]
    assert thought.thinking == "The test fails in main.py." and thought.signature == f"sig-{len(upstream.requests)}"
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id, "content": "ok"}]},
    ]
    second = turn()
    sent = upstream.requests[-1]["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": thought.thinking, "signature": thought.signature}
    assert [b.type for b in second.content] == ["thinking", "text"]


def test_thinking_never_reaches_a_deployment_that_does_not_take_it(mixed: Gateway, upstream: CachingUpstream) -> None:
    client = anthropic.Anthropic(base_url=mixed.url, api_key="none", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="cheap", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hi"}],
    )  # fmt: skip
    assert raw.parse().content[0].type == "text" and raw.headers["x-tierwise-dropped"] == "thinking"
    assert "thinking" not in upstream.requests[-1]


# -- prompt caching: carried to Anthropic, priced as each provider bills ----------------------
SYSTEM = "You are a careful coding agent. " * 300  # ~2,300 tokens: worth caching


def _anthropic_cost(billed: dict[str, Any]) -> float:
    """Anthropic's bill (docs.anthropic.com, "Prompt caching" pricing) at claude-haiku-4-5's rates."""
    hour = billed["cache_creation"]["ephemeral_1h_input_tokens"]
    return (
        billed["input_tokens"] * INPUT
        + billed["cache_read_input_tokens"] * CACHE_READ
        + (billed["cache_creation_input_tokens"] - hour) * CACHE_WRITE
        + hour * CACHE_WRITE_1H
        + billed["output_tokens"] * OUTPUT
    )


def _turns() -> list[list[Any]]:
    """Two turns of a coding agent: the second appends a tool call and its result to the first."""
    first: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "fix the bug", "cache_control": {"type": "ephemeral"}}]}
    ]
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "patched main.py"}
    second = [
        *first,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "edit_file", "input": {}}]},
        {"role": "user", "content": [{**result, "cache_control": {"type": "ephemeral"}}]},
    ]
    return [first, second]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cache_breakpoints_reach_claude_and_the_ledger_bills_what_anthropic_does(
    gw: Gateway, upstream: CachingUpstream, stream: bool
) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    # A 1-hour entry may not follow a 5-minute one: the long-lived prefix comes first
    hour = {"type": "ephemeral", "ttl": "1h"}
    variant = "stream" if stream else "json"  # the upstream's cache is shared by the two runs
    system = [{"type": "text", "text": SYSTEM, "cache_control": hour}]
    tools = [{**EDIT, "description": f"Edit a file ({variant})", "cache_control": hour}]
    seen = []
    for messages in _turns():
        kwargs: dict[str, Any] = {"model": "agent", "max_tokens": 256, "system": system, "tools": tools}
        if stream:
            with client.messages.stream(**kwargs, messages=messages) as s:
                message = s.get_final_message()
                request_id = s.response.headers["x-tierwise-request-id"]
        else:
            raw = client.messages.with_raw_response.create(**kwargs, messages=messages)
            message, request_id = raw.parse(), raw.headers["x-tierwise-request-id"]
        sent = upstream.requests[-1]
        assert sent["system"][0]["cache_control"] == hour
        assert sent["tools"][0]["cache_control"] == hour
        assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
        billed = upstream.usage_log[-1]
        usage = message.usage
        # Messages usage reads as Anthropic's: input_tokens exclude the cache reads and writes
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
            billed["input_tokens"],
            billed["cache_read_input_tokens"],
            billed["cache_creation_input_tokens"],
        )
        row = _row(gw, request_id)
        assert row["cost_usd"] == pytest.approx(_anthropic_cost(billed), abs=1e-9)
        assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (
            billed["cache_read_input_tokens"],
            billed["cache_creation_input_tokens"],
        )
        seen.append(billed)
    first, second = seen
    assert first["cache_read_input_tokens"] == 0 and first["cache_creation_input_tokens"] > 2000
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]  # the prefix hit
    assert first["cache_creation"]["ephemeral_1h_input_tokens"] > 2000  # system and tools, for an hour
    assert second["cache_creation_input_tokens"] > 0  # the new turn, up to the tool result's mark


def _agent_loop(client: anthropic.Anthropic, model: str, system: str, turns: int) -> None:
    """A Claude-Code-like loop: each turn marks only its last block (a tool result whose content is
    a string), so the breakpoint moves forward and each turn should read what the last one wrote."""
    messages: list[Any] = [{"role": "user", "content": "fix the failing test"}]
    for n in range(turns):
        marked = [*messages[:-1], {**messages[-1]}]
        content = marked[-1]["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else [dict(b) for b in content]
        blocks[-1]["cache_control"] = {"type": "ephemeral"}
        marked[-1]["content"] = blocks
        tools = [{**EDIT, "cache_control": {"type": "ephemeral"}}]
        answer = client.messages.create(
            model=model, max_tokens=256, system=[{"type": "text", "text": system}], tools=tools, messages=marked
        )
        content = [b.model_dump(exclude_none=True) for b in answer.content]
        messages.append({"role": "assistant", "content": content})
        used = next((b for b in content if b["type"] == "tool_use"), None)
        if used is None:  # the upstream answers a tool result in text: the next instruction
            messages.append({"role": "user", "content": f"now step {n}"})
            continue
        result = {"type": "tool_result", "tool_use_id": used["id"], "content": f"main.py, read {n}: " + "x = 1\n" * 300}
        messages.append({"role": "user", "content": [result]})


def test_a_moving_breakpoint_caches_through_the_gateway_as_it_does_direct(
    gw: Gateway, upstream: CachingUpstream
) -> None:
    """Every request's prefix must be byte-for-byte the next one's: litellm's form of a marked tool
    result (a one-part list) differed from its unmarked form (a string), so every other turn
    through Tierwise wrote its whole history again where a direct client read it."""
    direct = anthropic.Anthropic(base_url=upstream.url, api_key="none", max_retries=0)
    ours = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    seen = []
    for client, model, system in ((direct, "claude-haiku-4-5", "D" * 6000), (ours, "agent", "G" * 6000)):
        start = len(upstream.usage_log)
        _agent_loop(client, model, system, turns=6)
        seen.append(
            [(u["cache_read_input_tokens"], u["cache_creation_input_tokens"]) for u in upstream.usage_log[start:]]
        )
    for usage in seen:  # direct, then through the gateway: each turn reads all the last one cached
        assert all(read == sum(before) for before, (read, _) in itertools.pairwise(usage)), seen
    # the same writes, but for a few tokens of rendering (litellm's form of a tool, the tool ids)
    assert [w for _, w in seen[1]] == pytest.approx([w for _, w in seen[0]], abs=8)


def test_a_fifth_breakpoint_is_our_400_before_any_upstream(gw: Gateway, upstream: CachingUpstream) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    mark = {"cache_control": {"type": "ephemeral"}}
    sent = len(upstream.requests)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="agent",
            max_tokens=64,
            system=[{"type": "text", "text": "a", **mark}, {"type": "text", "text": "b", **mark}],  # type: ignore[list-item]
            tools=[{**EDIT, **mark}],  # type: ignore[list-item]
            messages=[{"role": "user", "content": [{"type": "text", "text": t, **mark} for t in "cd"]}],  # type: ignore[misc]
        )
    assert "at most 4 blocks may carry cache_control" in str(err.value) and "found 5" in str(err.value)
    assert len(upstream.requests) == sent


GPT_4O_MINI = (0.15e-6, 0.075e-6, 0.6e-6)  # input, cached input, output: litellm's map, per token


@pytest.fixture
def mixed(start_gateway: GatewayFactory, upstream: CachingUpstream, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """An OpenAI-compatible tier priced from litellm's map, under an Anthropic one."""
    monkeypatch.setenv("TIERWISE_TEST_ANTHROPIC_KEY", "sk-ant-test")
    return start_gateway(
        f"""
        version: 1
        tiers:
          - name: mid
            deployments:
              - {{name: mini, model: openai/gpt-4o-mini, api_base: "{upstream.url}/v1", max_retries: 0}}
          - name: frontier
            deployments:
              - {{name: claude, model: anthropic/claude-haiku-4-5, api_base: "{upstream.url}",
                  api_key_env: TIERWISE_TEST_ANTHROPIC_KEY, max_retries: 0}}
        routes:
          - {{name: agent, tier: frontier}}
          - {{name: cheap, tier: mid}}
        """
    )


@pytest.mark.parametrize("auto", [False, True], ids=["off", "auto"])
def test_auto_breakpoints_cache_a_chat_clients_conversation_on_claude(
    start_gateway: GatewayFactory, upstream: CachingUpstream, monkeypatch: pytest.MonkeyPatch, auto: bool
) -> None:
    """An OpenAI-SDK client cannot mark a prefix; with caching: {anthropic_breakpoints: auto} its
    conversation with Claude is cached as an Anthropic client's would be, and billed so."""
    monkeypatch.setenv("TIERWISE_TEST_ANTHROPIC_KEY", "sk-ant-test")
    gw = start_gateway(claude_policy(upstream.url, "caching: {anthropic_breakpoints: auto}" if auto else ""))
    client = openai.OpenAI(base_url=gw.v1, api_key="none", max_retries=0)
    messages: list[Any] = [
        {"role": "system", "content": f"{SYSTEM} ({'auto' if auto else 'off'})"},
        {"role": "user", "content": "fix the bug"},
    ]
    reads = []
    for n in range(3):
        raw = client.chat.completions.with_raw_response.create(model="agent", messages=messages, tools=[OPENAI_EDIT])
        answer = raw.parse().choices[0].message
        billed = upstream.usage_log[-1]
        reads.append(billed["cache_read_input_tokens"])
        assert _row(gw, raw.headers["x-tierwise-request-id"])["cost_usd"] == pytest.approx(
            _anthropic_cost(billed), abs=1e-9
        )
        messages.append(answer.model_dump(exclude_none=True))
        for call in answer.tool_calls or []:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": f"read {n}: " + "x = 1\n" * 200})
        if not answer.tool_calls:
            messages.append({"role": "user", "content": f"now step {n}"})
    sent = upstream.requests[-1]
    if auto:
        assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert sent["tools"][-1]["cache_control"] == {"type": "ephemeral"}
        assert reads[0] == 0 and reads[1] > 2000 and reads[2] > reads[1]  # each turn reads the last one's prefix
    else:
        assert reads == [0, 0, 0] and "cache_control" not in orjson.dumps(sent).decode()


@pytest.mark.parametrize("api", ["chat", "chat-stream", "responses"])
def test_openai_cached_tokens_are_billed_at_the_cached_rate(
    mixed: Gateway, upstream: CachingUpstream, api: str
) -> None:
    client = openai.OpenAI(base_url=mixed.v1, api_key="none", max_retries=0)
    system = SYSTEM + api
    rows = []
    for question in ("first question", "second question"):
        if api == "responses":
            raw = client.responses.with_raw_response.create(model="cheap", instructions=system, input=question)
            cached = raw.parse().usage.input_tokens_details.cached_tokens  # type: ignore[union-attr]
        else:
            messages: Any = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            stream = api == "chat-stream"
            raw = client.chat.completions.with_raw_response.create(
                model="cheap",
                messages=messages,
                stream=stream,
                **({"stream_options": {"include_usage": True}} if stream else {}),
            )
            parsed = raw.parse()
            usage = [c.usage for c in parsed if c.usage][-1] if stream else parsed.usage  # type: ignore[union-attr]
            cached = usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
        billed = upstream.usage_log[-1]
        assert cached == billed["prompt_tokens_details"]["cached_tokens"]
        row = _row(mixed, raw.headers["x-tierwise-request-id"])
        inp, read, out = GPT_4O_MINI
        bill = (billed["prompt_tokens"] - cached) * inp + cached * read + billed["completion_tokens"] * out
        assert row["cost_usd"] == pytest.approx(bill, abs=1e-9)
        assert row["cache_read_tokens"] == cached
        rows.append(row)
    assert rows[0]["cache_read_tokens"] == 0 and rows[1]["cache_read_tokens"] >= 1024


def test_breakpoints_never_reach_a_deployment_that_does_not_take_them(
    mixed: Gateway, upstream: CachingUpstream
) -> None:
    client = anthropic.Anthropic(base_url=mixed.url, api_key="none", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="cheap",
        max_tokens=64,
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hi"}],
    )
    assert raw.parse().content[0].type == "text"
    assert raw.headers["x-tierwise-dropped"] == "cache_control"
    sent = upstream.requests[-1]
    assert "cache_control" not in orjson.dumps(sent).decode() and "_anthropic_fields" not in sent


def test_the_readmes_coding_agent_example_runs(gw: Gateway, upstream: CachingUpstream) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Prompt caching") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")].replace("http://127.0.0.1:8000", gw.url).replace("sk-tw-...", "open-mode")
    conversation = [{"role": "user", "content": "fix the failing test"}]
    exec(code, {"LONG_INSTRUCTIONS": SYSTEM + "readme", "conversation": conversation})
    sent = upstream.requests[-1]
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"} and sent["tools"][0]["cache_control"]
    assert upstream.usage_log[-1]["cache_creation_input_tokens"] > 2000
