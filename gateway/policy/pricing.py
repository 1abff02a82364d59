"""The one place that knows prices and computes cost.

Prices come from the policy (an override per deployment) or else from litellm's bundled
price map, read straight from its JSON file so that checking a policy does not pay for
``import litellm``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.policy.models import Deployment, Price
from gateway.usage import Usage

__all__ = ["REFERENCE_CALL", "PriceMap", "cost_usd", "litellm_price_map", "reference_call_cost"]

_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True)
class PriceMap:
    """Model name -> Price (and output-token limit), from litellm's map."""

    entries: dict[str, Price]
    output_limits: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def _names(model: str) -> list[str]:
        # litellm keys some models bare ("gpt-4o") and some with a provider prefix.
        return [model, model.split("/", 1)[1]] if "/" in model else [model]

    def lookup(self, model: str) -> Price | None:
        return next((self.entries[n] for n in self._names(model) if n in self.entries), None)

    def price_for(self, deployment: Deployment) -> Price | None:
        if deployment.price is not None:
            return deployment.price
        if deployment.provider == "fake":
            return None
        return self.lookup(deployment.model)

    def output_cap(self, deployment: Deployment) -> int | None:
        """The most output tokens the deployment may be asked for: the policy's cap, else the model's."""
        if deployment.max_output_tokens is not None:
            return deployment.max_output_tokens
        return next((self.output_limits[n] for n in self._names(deployment.model) if n in self.output_limits), None)


@lru_cache(maxsize=1)
def litellm_price_map() -> PriceMap:
    spec = importlib.util.find_spec("litellm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return PriceMap({})
    path = Path(next(iter(spec.submodule_search_locations))) / _MAP_FILE
    if not path.exists():
        return PriceMap({})
    raw: dict[str, Any] = json.loads(path.read_text())
    entries: dict[str, Price] = {}
    limits: dict[str, int] = {}
    for name, info in raw.items():
        if not isinstance(info, dict):
            continue
        inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if isinstance(inp, (int, float)) and isinstance(out, (int, float)):
            entries[name] = Price(
                input_per_1m=inp * 1e6,
                output_per_1m=out * 1e6,
                cached_input_per_1m=_per_1m(info.get("cache_read_input_token_cost")),
                cache_write_per_1m=_per_1m(info.get("cache_creation_input_token_cost")),
                cache_write_1h_per_1m=_per_1m(info.get("cache_creation_input_token_cost_above_1hr")),
            )
        cap = info.get("max_output_tokens")
        if isinstance(cap, int) and cap > 0:
            limits[name] = cap
    return PriceMap(entries, limits)


def _per_1m(per_token: Any) -> float | None:
    return per_token * 1e6 if isinstance(per_token, (int, float)) and per_token >= 0 else None


def cost_usd(price: Price, usage: Usage) -> float:
    """What the provider bills for these tokens: each kind at its own rate, a cache rate left
    unset at the input rate. Anthropic's 1-hour writes fall back to the 5-minute write rate."""
    inp = price.input_per_1m
    read = inp if price.cached_input_per_1m is None else price.cached_input_per_1m
    write = inp if price.cache_write_per_1m is None else price.cache_write_per_1m
    hour = write if price.cache_write_1h_per_1m is None else price.cache_write_1h_per_1m
    return (
        usage.uncached_prompt_tokens * inp
        + usage.cache_read_tokens * read
        + (usage.cache_write_tokens - usage.cache_write_1h_tokens) * write
        + usage.cache_write_1h_tokens * hour
        + usage.completion_tokens * price.output_per_1m
    ) / 1e6


# Prompt and completion tokens of the call used to compare tiers' prices as one number. Only the
# ratios between tiers matter, and those move little with the mix (input and output prices
# mostly keep a 1:4 to 1:5 ratio across a provider's line-up).
REFERENCE_CALL = (750, 250)


def reference_call_cost(price: Price) -> float:
    return cost_usd(price, Usage(*REFERENCE_CALL))
