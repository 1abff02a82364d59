"""The embeddings flow: a pinned deployment, the same keys, budgets and ledger as chat.

    check -> pick the deployment -> authorize -> admit (rate) -> reserve -> call (retries on
    that one deployment, never another: vectors of different models do not mix) -> settle -> row

The request is authenticated, and refused requests are ledgered, by :meth:`Pipeline.call`;
from the reservation on, every way out settles it and writes the request's one row here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, get_type_hints

import httpx
import orjson
from openai.types import embedding_create_params as _params

from gateway.dispatch import Attempted, PlanStep
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from gateway.pipeline.call import Call
from gateway.pipeline.core import Pipeline
from gateway.policy.models import Deployment, DispatchConfig
from gateway.policy.pricing import cost_usd
from gateway.providers.openai_compatible import parse_retry_after
from gateway.redact import redact
from gateway.translate.check import FieldError, check
from gateway.usage import Usage, estimate_tokens

__all__ = ["EMBEDDING_FIELDS", "EmbeddingsAnswer", "EmbeddingsFlow"]

log = logging.getLogger("tierwise.embeddings")

_HINTS: Final = get_type_hints(_params.EmbeddingCreateParams)
EMBEDDING_FIELDS: Final = frozenset(_HINTS)
MAX_INPUTS: Final = 2048  # OpenAI's limit on inputs per request
_REQUEST_FAULT: Final = {400, 404, 413, 422}


@dataclass
class EmbeddingsAnswer:
    body: bytes  # the upstream's JSON, as it sent it
    headers: dict[str, str]
    cost_usd: float


class _Failed(Exception):
    def __init__(self, status: int, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.retry_after = status, kind, retry_after
        self.retryable = status in (0, 408, 409, 429) or status >= 500  # 0: no answer at all


class EmbeddingsFlow:
    def __init__(
        self,
        pipeline: Pipeline,
        credential: Callable[[str], str | None],
        fake_base: Callable[[], str | None],
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._credential = credential
        self._fake_base = fake_base  # the built-in fake's URL, when the gateway runs one
        self._client = client or httpx.AsyncClient(trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def run(self, call: Call, body: Mapping[str, Any]) -> EmbeddingsAnswer:
        _check(body)
        call.requested_model = body["model"]
        config = call.loaded.policy.embeddings
        dep = config.deployment(body["model"]) if config else None
        if config is None or dep is None:
            names = [d.name for d in config.deployments] if config else []
            raise ModelNotFoundError(
                f"no embeddings deployment `{body['model']}` in the policy"
                + (f" (embeddings deployments: {', '.join(names)})" if names else " (it has no `embeddings` section)"),
                param="model",
            )
        if dep.name != body["model"] and dep.upstream_model != body["model"]:
            call.notes.append(f"embeddings model {body['model']!r} served by the default, {dep.name}")
        identity = call.identity
        allowed = identity.allowed_routes if identity is not None else None
        if allowed is not None and not {dep.name, "embeddings"} & allowed:
            raise PermissionDeniedError(f"this key may not use embeddings deployment `{dep.name}`", param="model")
        assert dep.price is not None  # the policy requires it
        # the worst case held against a token limit too, as chat does, so concurrent calls cannot overrun it
        worst = _worst_case_tokens(body)
        tokens = worst if identity is not None and identity.tpm_limit is not None else 0
        call.token_hold, call.reservation, call.rate_headers = await self.pipeline.guard.admit(
            identity, tokens, cost_usd(dep.price, Usage(worst, 0))
        )
        attempted = Attempted(step=PlanStep("", dep, dep.price))
        try:
            content, usage = await self._send(dep, body, attempted, call.loaded.policy.dispatch)
        except _Failed as exc:
            error = _client_error(exc)
            await self.pipeline.settle(call, attempted, None, error.status_code, exc.kind)
            raise error from exc
        except BaseException:
            await self.pipeline.settle(call, attempted, None, 500, "internal_error")
            raise
        cost = await self.pipeline.settle(call, attempted, usage or _estimate(body), 200, None)
        headers = call.headers()
        headers["x-tierwise-deployment"] = dep.name
        headers["x-tierwise-cost-usd"] = f"{cost:.8f}"
        return EmbeddingsAnswer(content, headers, cost)

    async def _send(
        self, dep: Deployment, body: Mapping[str, Any], attempted: Attempted, config: DispatchConfig
    ) -> tuple[bytes, Usage | None]:
        base = dep.api_base or (self._fake_base() if dep.provider == "fake" else None) or "https://api.openai.com/v1"
        key = self._credential(dep.api_key_env) if dep.api_key_env else None
        headers = {"authorization": f"Bearer {key}"} if key else {}
        payload = orjson.dumps({**body, "model": dep.upstream_model})
        clock = self.pipeline.clock
        for retry in range(dep.max_retries + 1):
            attempted.attempts += 1
            try:
                return await self._post(base.rstrip("/") + "/embeddings", payload, headers, dep.timeout_s, key)
            except _Failed as exc:
                attempted.error_type = exc.kind
                attempted.fallbacks.append(f"{dep.name}: {exc.kind}")
                if not exc.retryable or retry == dep.max_retries:
                    raise
                wait = exc.retry_after
                if wait is None:
                    wait = min(config.backoff_max_s, config.backoff_base_s * 2.0**retry)
                elif wait > config.max_retry_after_s:
                    raise
                await clock.sleep(wait)
        raise AssertionError("unreachable")

    async def _post(
        self, url: str, payload: bytes, headers: dict[str, str], timeout_s: float, key: str | None
    ) -> tuple[bytes, Usage | None]:
        try:
            response = await self._client.post(
                url, content=payload, headers={"content-type": "application/json", **headers}, timeout=timeout_s
            )
        except httpx.TimeoutException as exc:
            raise _Failed(504, "timeout", "the upstream timed out") from exc
        except httpx.HTTPError as exc:
            raise _Failed(0, "connect", "the upstream could not be reached") from exc
        if response.status_code >= 400:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _Failed(
                response.status_code, f"http_{response.status_code}", _upstream_message(response, key), retry_after
            )
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise _Failed(502, "malformed_answer", "the upstream answered with invalid JSON") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise _Failed(502, "malformed_answer", "the upstream answer has no `data`")
        usage = answer.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return response.content, Usage(int(tokens), 0) if isinstance(tokens, int) else None


def _check(body: Mapping[str, Any]) -> None:
    try:
        if not isinstance(body.get("input"), (str, list)):
            raise FieldError("input", "is required: a string, a list of strings or token ids")
        for key, value in body.items():
            if key not in EMBEDDING_FIELDS:
                raise FieldError(key, "is not an embeddings parameter this gateway accepts", "unsupported_parameter")
            check(value, _HINTS[key], (key,))
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise FieldError("model", "is required: a string")
        given = body["input"]
        if given in ("", []):
            raise FieldError("input", "is required: a string, a list of strings or token ids")
        if isinstance(given, list) and len(given) > MAX_INPUTS:
            raise FieldError("input", f"holds {len(given)} inputs; the limit is {MAX_INPUTS}")
        dimensions = body.get("dimensions")
        if dimensions is not None and not 1 <= dimensions <= 65536:
            raise FieldError("dimensions", "must be between 1 and 65536")
    except FieldError as exc:
        raise InvalidRequestError(exc.message, param=exc.param, code=exc.code) from None


def _estimate(body: Mapping[str, Any]) -> Usage:
    given = body["input"]
    texts = [given] if isinstance(given, str) else given
    tokens = sum(estimate_tokens(t) if isinstance(t, str) else len(t) if isinstance(t, list) else 1 for t in texts)
    return Usage(tokens, 0, estimated=True)


def _worst_case_tokens(body: Mapping[str, Any]) -> int:
    # 2 characters a token over the whole input: above every tokenizer's count
    return len(orjson.dumps(body.get("input"))) // 2 + 16


def _upstream_message(response: httpx.Response, key: str | None) -> str:
    """The upstream's own message, first line, without our key (some upstreams echo headers)."""
    try:
        err = orjson.loads(response.content).get("error")
        message = err.get("message") if isinstance(err, dict) else err
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    text = str(message or response.reason_phrase or response.status_code).strip()
    return redact(text.splitlines()[0] if text else "", [key])[:200]


def _client_error(exc: _Failed) -> GatewayError:
    if exc.status in _REQUEST_FAULT:
        return InvalidRequestError(
            f"the upstream model rejected the request ({exc.status}): {exc}", code="upstream_rejected_request"
        )
    if exc.status == 504:
        return UpstreamTimeoutError("the upstream model timed out")
    public = "the upstream could not be reached" if exc.status == 0 else f"the upstream answered {exc.status}"
    return UpstreamError(f"the embeddings deployment failed: {public}")
