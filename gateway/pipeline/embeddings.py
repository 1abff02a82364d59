"""The embeddings flow: a pinned deployment, the same keys, budgets and ledger as chat.

    check -> pick the deployment -> authorize -> admit (rate) -> reserve -> call (retries on
    that one deployment, never another: vectors of different models do not mix) -> settle -> row

The request is authenticated, and refused requests are ledgered, by :meth:`Pipeline.call`;
from the reservation on, every way out settles it and writes the request's one row here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.dispatch import Attempted, DispatchFailed, Plan, PlanStep
from gateway.embeddings_request import check_embeddings_request
from gateway.errors import ModelNotFoundError, PermissionDeniedError
from gateway.pipeline.call import Call
from gateway.pipeline.core import Pipeline
from gateway.policy.pricing import cost_usd
from gateway.usage import Usage, estimate_tokens

__all__ = ["EmbeddingsAnswer", "EmbeddingsFlow"]


@dataclass
class EmbeddingsAnswer:
    body: bytes  # the upstream's JSON, as it sent it
    headers: dict[str, str]
    cost_usd: float


class EmbeddingsFlow:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def run(self, call: Call, body: Mapping[str, Any]) -> EmbeddingsAnswer:
        check_embeddings_request(body)
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
        # One deployment and no fallback: vectors of different models do not mix.
        plan = Plan([PlanStep("", dep, dep.price)], "")
        attempted = Attempted()
        try:
            completion, attempted = await self.pipeline.dispatcher.embed(
                plan, dict(body), call.loaded.policy.dispatch, attempted
            )
        except DispatchFailed as failed:
            raise await self.pipeline.accounts.failed(call, failed) from failed
        except BaseException:
            await self.pipeline.accounts.settle(call, attempted, None, 500, "internal_error")
            raise
        cost = await self.pipeline.accounts.settle(call, attempted, completion.usage or _estimate(body), 200, None)
        headers = call.headers()
        headers["x-tierwise-deployment"] = dep.name
        headers["x-tierwise-cost-usd"] = f"{cost:.8f}"
        return EmbeddingsAnswer(completion.body, headers, cost)


def _estimate(body: Mapping[str, Any]) -> Usage:
    given = body["input"]
    texts = [given] if isinstance(given, str) else given
    tokens = sum(estimate_tokens(t) if isinstance(t, str) else len(t) if isinstance(t, list) else 1 for t in texts)
    return Usage(tokens, 0, estimated=True)


def _worst_case_tokens(body: Mapping[str, Any]) -> int:
    # 2 characters a token over the whole input: above every tokenizer's count
    return len(orjson.dumps(body.get("input"))) // 2 + 16
