"""The one place that knows prices and computes cost.

Prices come from the policy (an override per deployment) or else from litellm's bundled
price map, read straight from its JSON file so that checking a policy does not pay for
``import litellm``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.policy.models import Deployment, Price

__all__ = ["REFERENCE_CALL", "PriceMap", "cost_usd", "litellm_price_map", "reference_call_cost"]

_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True)
class PriceMap:
    """Model name -> Price, from litellm's map."""

    entries: dict[str, Price]

    def lookup(self, model: str) -> Price | None:
        # litellm keys some models bare ("gpt-4o") and some with a provider prefix.
        candidates = [model]
        if "/" in model:
            candidates.append(model.split("/", 1)[1])
        for name in candidates:
            price = self.entries.get(name)
            if price is not None:
                return price
        return None

    def price_for(self, deployment: Deployment) -> Price | None:
        if deployment.price is not None:
            return deployment.price
        if deployment.provider == "fake":
            return None
        return self.lookup(deployment.model)


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
    for name, info in raw.items():
        if not isinstance(info, dict):
            continue
        inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if isinstance(inp, (int, float)) and isinstance(out, (int, float)):
            entries[name] = Price(input_per_1m=inp * 1e6, output_per_1m=out * 1e6)
    return PriceMap(entries)


def cost_usd(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * price.input_per_1m + completion_tokens * price.output_per_1m) / 1e6


# Prompt and completion tokens of the call used to compare tiers' prices as one number. Only the
# ratios between tiers matter, and those move little with the mix (input and output prices
# mostly keep a 1:4 to 1:5 ratio across a provider's line-up).
REFERENCE_CALL = (750, 250)


def reference_call_cost(price: Price) -> float:
    return cost_usd(price, *REFERENCE_CALL)
