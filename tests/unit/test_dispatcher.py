"""Dispatch: retries, Retry-After, failure classes, cooldowns, fallback order (no network, no sleeps)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.dispatch import Dispatcher, DispatchFailed, Plan, PlanStep, ProbeHook
from gateway.errors import (
    InvalidRequestError,
    UnsendableRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from gateway.policy.loader import LoadedPolicy
from tests.unit.fakes import THREE_TIERS, FakeClock, ScriptedProvider, completion, policy

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedPolicy:
    return policy(tmp_path, THREE_TIERS)


def make(
    scripts: dict[str, list[object]], env: dict[str, str] | None = None, on_probe: ProbeHook | None = None
) -> tuple[Dispatcher, FakeClock, ScriptedProvider]:
    clock = FakeClock()
    provider = ScriptedProvider(scripts)  # type: ignore[arg-type]
    dispatcher = Dispatcher({"openai_compatible": provider}, (env or {}).get, clock, random.Random(0), on_probe)
    return dispatcher, clock, provider


async def test_success_first_time(loaded: LoadedPolicy) -> None:
    d, clock, _provider = make({"mid-a": [completion("hello")]})
    done, attempted = await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    assert b"hello" in done.body and attempted.attempts == 1 and attempted.fallbacks == []
    assert attempted.step is not None and attempted.step.deployment.name == "mid-a"
    assert clock.slept == []


async def test_5xx_is_retried_with_jittered_backoff_then_next_deployment(
    loaded: LoadedPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    d, clock, provider = make({"mid-a": [UpstreamHTTPError(500, "boom")], "mid-b": [completion()]})
    with caplog.at_level("WARNING", logger="tierwise.dispatch"):
        _, attempted = await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    # each failure is in the log, with the upstream's (redacted) reason the client is not shown
    assert [r.getMessage() for r in caplog.records] == [
        "deployment mid-a failed (attempt 1): upstream answered 500: boom",
        "deployment mid-a failed (attempt 2): upstream answered 500: boom",
    ]
    assert [name for name, _ in provider.calls] == ["mid-a", "mid-a", "mid-b"]  # max_retries: 1
    assert len(clock.slept) == 1 and 0.05 <= clock.slept[0] <= 0.1  # base 0.1 s, jittered into [50%, 100%]
    assert attempted.fallbacks == ["mid-a: http_500", "mid-a: http_500"]
    assert not d.cooling_down(loaded.policy.tier("mid").deployments[0])  # one request says nothing


async def test_retry_after_is_honoured_up_to_the_limit(loaded: LoadedPolicy) -> None:
    d, clock, provider = make({"mid-a": [UpstreamHTTPError(429, "slow down", retry_after=3)], "mid-b": [completion()]})
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    assert clock.slept == [3]
    d, clock, provider = make({"mid-a": [UpstreamHTTPError(429, "later", retry_after=60)], "mid-b": [completion()]})
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    assert clock.slept == []  # 60 s is past max_retry_after_s: straight to the next deployment
    assert [name for name, _ in provider.calls] == ["mid-a", "mid-b"]


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_request_faults_end_the_dispatch_without_cooldown(loaded: LoadedPolicy, status: int) -> None:
    said = "max_tokens is too large"
    d, _clock, provider = make({"mid-a": [UpstreamHTTPError(status, said, said=said)]})
    with pytest.raises(DispatchFailed) as info:
        await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    err = info.value.error
    assert isinstance(err, InvalidRequestError) and err.status_code == 400
    assert "max_tokens is too large" in err.message and err.code == "upstream_rejected_request"
    assert len(provider.calls) == 1  # no retry, no other deployment, no other tier
    assert d.cooldowns() == {}


async def test_a_rejection_without_a_json_error_message_relays_nothing_of_the_body(loaded: LoadedPolicy) -> None:
    d, _clock, _ = make({"mid-a": [UpstreamHTTPError(400, "<html>nginx at 10.1.2.3</html>")]})
    with pytest.raises(DispatchFailed) as info:
        await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    assert info.value.error.message == "the upstream model rejected the request (400)"


async def test_an_unsendable_request_is_the_clients_400_in_our_words_only(loaded: LoadedPolicy) -> None:
    reason = "litellm.APIConnectionError: Original Response: Traceback ... 10.1.2.3"
    d, _clock, provider = make({"mid-a": [UnsendableRequest(reason)]})
    with pytest.raises(DispatchFailed) as info:
        await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    err = info.value.error
    assert isinstance(err, InvalidRequestError) and err.code == "unsupported_by_provider"
    assert "10.1.2.3" not in err.message and "mid-a" in err.message
    assert [name for name, _ in provider.calls] == ["mid-a"]  # the request's fault: no other deployment


async def test_a_deployment_cools_down_only_after_failing_several_requests(loaded: LoadedPolicy) -> None:
    d, clock, _ = make({"mid-a": [UpstreamHTTPError(500, "x")], "mid-b": [completion()]})
    mid_a = loaded.policy.tier("mid").deployments[0]
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    assert not d.cooling_down(mid_a)
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)  # failures_before_cooldown: 2
    await d.probes_done()  # ... so the dispatcher asked mid-a itself, and it failed that too
    assert d.cooling_down(mid_a) and "2 failed request(s)" in d.cooldowns()["mid-a"]
    _, attempted = await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    assert attempted.fallbacks == ["mid-a: cooling down"] and attempted.attempts == 1
    clock.advance(31)
    assert not d.cooling_down(mid_a)


async def test_a_model_the_upstream_does_not_have_is_the_deployments_fault(loaded: LoadedPolicy) -> None:
    """A 404 (a retired model, a wrong api_base) is not the client's 400: the next deployment
    serves, and once the probe confirms it, the deployment cools down."""
    gone = UpstreamHTTPError(404, "The model `gpt-4-0314` does not exist", said="The model does not exist")
    d, _clock, provider = make({"mid-a": [gone], "mid-b": [completion("served")]})
    mid_a = loaded.policy.tier("mid").deployments[0]
    done, attempted = await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    assert b"served" in done.body and attempted.fallbacks == ["mid-a: http_404"]
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)  # failures_before_cooldown: 2
    await d.probes_done()
    assert d.cooling_down(mid_a)
    assert [name for name, _ in provider.calls] == ["mid-a", "mid-b", "mid-a", "mid-b", "mid-a"]  # the last: the probe


async def test_a_deployment_that_answers_the_probe_stays_in_service(loaded: LoadedPolicy) -> None:
    """Requests it cannot serve (one client can send many) are not the deployment's fault."""
    probed: list[tuple[str, bool]] = []
    d, _, provider = make(
        {
            "mid-a": [
                UpstreamHTTPError(500, "x"),
                UpstreamHTTPError(500, "x"),
                UpstreamHTTPError(500, "x"),
                UpstreamHTTPError(500, "x"),
                completion(),
            ],
            "mid-b": [completion()],
        },
        on_probe=lambda step, done, seconds, _embeddings: probed.append((step.deployment.name, done is not None)),
    )
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    await d.probes_done()
    assert probed == [("mid-a", True)] and not d.cooling_down(loaded.policy.tier("mid").deployments[0])
    assert provider.calls[-1][1]["messages"] == [{"role": "user", "content": "Say OK."}]


async def test_embeddings_take_the_same_road_and_are_probed_as_embeddings(loaded: LoadedPolicy) -> None:
    """Embeddings are retried on their one deployment, counted towards its health, and a failing
    embeddings server is probed with an embeddings request (it may serve no chat at all)."""
    failing = [UpstreamHTTPError(500, "x")] * 4 + [completion()]
    probed: list[tuple[str, bool]] = []
    d, clock, provider = make(
        {"mid-a": failing},
        on_probe=lambda step, done, seconds, embeddings: probed.append((step.deployment.name, embeddings)),
    )
    one = Plan([PlanStep("", loaded.policy.tier("mid").deployments[0], loaded.price("mid-a"))], "")
    body = {"model": "e", "input": ["a", "b"]}
    for _ in range(2):
        with pytest.raises(DispatchFailed) as failed:
            await d.embed(one, body, loaded.policy.dispatch)
        assert failed.value.attempted.attempts == 2 and isinstance(failed.value.error, UpstreamError)
    assert [b for _, b in provider.calls[:4]] == [body] * 4  # sent as given: no output limit added
    await d.probes_done()
    assert probed == [("mid-a", True)] and provider.calls[-1][1] == {"model": "probe", "input": "OK"}
    assert len(clock.slept) == 2  # one backoff per request, before its retry


async def test_a_success_resets_the_count(loaded: LoadedPolicy) -> None:
    d, _, _ = make(
        {"mid-a": [UpstreamHTTPError(500, "x"), UpstreamHTTPError(500, "x"), completion()], "mid-b": [completion()]}
    )
    mid_a = loaded.policy.tier("mid").deployments[0]
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)  # mid-a fails twice (one request)
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)  # mid-a answers
    assert not d.cooling_down(mid_a) and d.busy("mid-a", 1)


@pytest.mark.parametrize("error", [UpstreamConnectError("refused"), UpstreamHTTPError(401, "bad key")])
async def test_unreachable_or_unauthorised_cools_down_at_once(loaded: LoadedPolicy, error: UpstreamError) -> None:
    d, _, provider = make({"mid-a": [error], "mid-b": [completion()]})
    await d.complete(d.plan(loaded, "mid"), BODY, loaded.policy.dispatch)
    assert [name for name, _ in provider.calls] == ["mid-a", "mid-b"]  # no retry either
    assert d.cooling_down(loaded.policy.tier("mid").deployments[0])


async def test_falls_back_up_the_tiers_in_order(loaded: LoadedPolicy) -> None:
    d, _, provider = make(
        {
            "local-a": [UpstreamHTTPError(503, "x")],
            "mid-a": [UpstreamHTTPError(502, "x")],
            "mid-b": [UpstreamHTTPError(500, "x")],
            "top-a": [completion()],
        }
    )
    _, attempted = await d.complete(d.plan(loaded, "local"), BODY, loaded.policy.dispatch)
    assert [n for n, _ in provider.calls] == ["local-a", "mid-a", "mid-a", "mid-b", "top-a"]
    assert "tier local -> mid" in attempted.fallbacks and "tier mid -> frontier" in attempted.fallbacks
    assert attempted.step is not None and attempted.step.tier == "frontier"


async def test_all_failing_is_a_typed_502_without_upstream_internals(loaded: LoadedPolicy) -> None:
    d, _, _ = make({"top-a": [UpstreamHTTPError(500, "Traceback (most recent call last): File /srv/app.py")]})
    with pytest.raises(DispatchFailed) as info:
        await d.complete(d.plan(loaded, "frontier"), BODY, loaded.policy.dispatch)
    err = info.value.error
    assert isinstance(err, UpstreamError) and err.status_code == 502
    assert "Traceback" not in err.message and "the upstream answered 500" in err.message


@pytest.mark.parametrize(
    "error",
    [
        UpstreamTimeoutError("read timed out on 10.0.0.7:443"),
        UpstreamConnectError("cannot reach upstream mid-a: ClientConnectorError 10.0.0.7"),
        UpstreamProtocolError("upstream answered with invalid JSON: <html>nginx at 10.0.0.7"),
        UpstreamHTTPError(502, "<html>nginx 10.0.0.7</html>"),
    ],
)
def test_an_upstream_error_that_escapes_dispatch_shows_a_client_only_its_kind(error: UpstreamError) -> None:
    """A provider's failure is a GatewayError: if one ever reached a handler uncaught, its envelope
    would hold the class's public message, never the provider's detail (which the log gets)."""
    shown = error.to_envelope()["error"]["message"]
    assert "10.0.0.7" not in shown and "nginx" not in shown and shown.startswith("the upstream")
    assert "10.0.0.7" in str(error)


def test_plan_skips_deployments_without_credentials_or_down(tmp_path: Path) -> None:
    keyed = THREE_TIERS.replace("name: mid-a, model: openai/b,", "name: mid-a, model: openai/b, api_key_env: MID_KEY,")
    loaded = policy(tmp_path, keyed)
    d, _, _ = make({})
    names = [s.deployment.name for s in d.plan(loaded, "mid", down={"top-a"}).steps]
    assert names == ["mid-b"]
    d, _, _ = make({}, env={"MID_KEY": "sk-x"})
    assert [s.deployment.name for s in d.plan(loaded, "mid").steps] == ["mid-a", "mid-b", "top-a"]
    assert [s.deployment.name for s in d.plan(loaded, "mid", fallback=False).steps] == ["mid-a", "mid-b"]
    assert [s.deployment.name for s in d.plan(loaded, "mid", deployment="mid-b").steps] == ["mid-b"]
