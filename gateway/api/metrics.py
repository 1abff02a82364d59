"""GET /metrics: Prometheus' text format.

With API keys configured it needs the master key or ``TIERWISE_METRICS_TOKEN`` (a scraper's own
token, so the master key need not sit in a Prometheus config); without keys (open mode), loopback
clients only, like every other endpoint then.
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.deps import client_host
from gateway.errors import AuthenticationError
from gateway.keys.guard import bearer_token
from gateway.metrics import CONTENT_TYPE
from gateway.net import is_loopback
from gateway.state import GatewayState

__all__ = ["metrics_endpoint"]


async def metrics_endpoint(request: Request) -> Response:
    state: GatewayState = request.app.state.tierwise
    token = bearer_token(request.headers.get("authorization"))
    secret = state.settings.metrics_token
    scraper = bool(secret and token and hmac.compare_digest(token.encode(), secret.get_secret_value().encode()))
    any_keys = state.guard.store.cached_any_keys()
    if any_keys is None:
        any_keys = await asyncio.to_thread(state.guard.store.any_keys)
    if any_keys and not (scraper or state.guard.is_master(token)):
        raise AuthenticationError("/metrics needs the master key or the metrics token (TIERWISE_METRICS_TOKEN)")
    if not any_keys and not (scraper or is_loopback(client_host(request))):
        raise AuthenticationError("this gateway has no API keys yet: /metrics serves loopback clients only")
    # Off the loop: under --workers N this reads every worker's file.
    return Response(await asyncio.to_thread(state.metrics.exposition), media_type=CONTENT_TYPE)
