"""A schema fuzzer against the gateway's own OpenAPI document: whatever a client sends, no 5xx,
no stack trace, and every error in OpenAI's envelope."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from tests.conftest import REPO, GatewayFactory


def _errors_in_the_envelope(ctx: Any, response: Any, case: Any) -> None:
    """OpenAI's envelope, or Anthropic's on its Messages API."""
    if response.status_code >= 400:
        body = response.json()
        if case.path == "/v1/messages":
            assert set(body) == {"type", "error"} and body["type"] == "error", body
            assert set(body["error"]) == {"type", "message"}, body
        else:
            assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    assert "Traceback" not in response.text


def test_no_input_breaks_the_gateway(start_gateway: GatewayFactory) -> None:
    gw = start_gateway((REPO / "policies" / "fake.yaml").read_text())
    raw = httpx.get(gw.url + "/openapi.json").json()
    # Mostly this policy's own model names, so generated requests reach the upstream too.
    chat = raw["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    chat["properties"]["model"] = {"enum": ["auto", "cheap", "best", "tier/mid", "fake-local", "nope"]}
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings", "/metrics"} <= paths
    for operation in operations:
        # Invalid data needs something to be invalid: a body or a parameter.
        modes = [schemathesis.GenerationMode.POSITIVE]
        if operation.method.upper() != "GET":
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def fuzz(case: Any) -> None:
                case.call_and_validate(base_url=gw.url, checks=[not_a_server_error, _errors_in_the_envelope])

            try:
                fuzz()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.path  # nothing invalid to make
    statuses = {row["status_code"] for row in gw.rows("api = 'chat'", wait_for=20)}
    assert 200 in statuses and statuses & {400, 404, 415}  # it got through, and it got refused
