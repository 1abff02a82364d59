"""Load a policy file into a validated, priced snapshot, with errors that name file and path."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.policy.models import Deployment, Policy, Price
from gateway.policy.pricing import PriceMap, litellm_price_map

__all__ = ["LoadedPolicy", "PolicyError", "format_loc", "load_policy", "parse_policy"]


class PolicyError(Exception):
    """A policy that cannot be used; ``str()`` lists every problem as ``file: path: message``."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}" for loc, msg in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class LoadedPolicy:
    """An immutable snapshot: in-flight requests keep the one they started with."""

    policy: Policy
    prices: dict[str, Price]  # deployment name -> price
    source: Path
    mtime_ns: int
    output_caps: dict[str, int | None] = field(default_factory=dict)  # deployment name -> max output tokens
    text: str = ""  # the file as read, for the snapshot the ledger keeps

    def price(self, deployment: str) -> Price:
        return self.prices[deployment]

    def output_cap(self, deployment: str) -> int | None:
        return self.output_caps.get(deployment)

    def caching_unpriced(self) -> list[str]:
        """Paid deployments whose cache reads or writes have no price of their own: those tokens
        are billed at the input rate (never under the provider's bill, but maybe over it)."""
        judge = self.policy.quality.judge
        deployments = [*self.policy.all_deployments, *([judge] if isinstance(judge, Deployment) else [])]
        return [
            d.name
            for d in deployments
            if d.provider != "fake" and (p := self.prices.get(d.name)) and p.input_per_1m > 0 and p.caching_unpriced
        ]


class _Loader(yaml.SafeLoader):
    """YAML 1.2's booleans: only ``true`` and ``false``. YAML 1.1 (PyYAML's default) also reads
    ``on``/``off``/``yes``/``no`` as booleans, which turns ``escalate: {on: [...]}`` or a tier named
    ``no`` into something else entirely."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """A policy's YAML, read as the gateway reads it (YAML 1.2 booleans: ``on`` is a word)."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [("", f"invalid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise PolicyError(source, [("", "a policy must be a YAML mapping")])
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = [(format_loc(err["loc"]), _message(err)) for err in exc.errors()]
        # Checks across sections (a route naming a tier, ...) run only once the structure is valid,
        # so a typo'd key would hide them until it is fixed: without the unknown keys, look again.
        trimmed = _without_unknown_keys(data, exc.errors())
        if trimmed is not None:
            try:
                Policy.model_validate(trimmed)
            except ValidationError as more:
                problems += [
                    p for p in ((format_loc(e["loc"]), _message(e)) for e in more.errors()) if p not in problems
                ]
        raise PolicyError(source, problems) from exc


def _without_unknown_keys(data: dict[str, Any], errors: Sequence[Any]) -> dict[str, Any] | None:
    """A copy of ``data`` without the keys the errors name as unknown; None when an error is of
    another kind (the structure stays invalid, and another look would find nothing new)."""
    if not errors or any(e["type"] != "extra_forbidden" for e in errors):
        return None
    trimmed = copy.deepcopy(data)
    for err in errors:
        *path, key = err["loc"]
        node: Any = trimmed
        try:
            for step in path:
                node = node[step]
            del node[key]
        except (KeyError, IndexError, TypeError):
            return None  # a location through a union's tag: not a plain path into the YAML
    return trimmed


def load_policy(path: Path, price_map: PriceMap | None = None) -> LoadedPolicy:
    source = str(path)
    try:
        text = path.read_text()
        mtime_ns = path.stat().st_mtime_ns
    except OSError as exc:
        raise PolicyError(source, [("", f"cannot read policy: {exc.strerror or exc}")]) from exc
    policy = parse_policy(text, source)
    price_map = price_map or litellm_price_map()
    prices, problems = _resolve_prices(policy, price_map)
    if problems:
        raise PolicyError(source, problems)
    caps = {d.name: price_map.output_cap(d) for d in policy.all_deployments}
    return LoadedPolicy(policy=policy, prices=prices, source=path, mtime_ns=mtime_ns, output_caps=caps, text=text)


def _message(err: object) -> str:
    assert isinstance(err, dict)
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        return "unknown key (not part of the policy schema)"
    return msg.removeprefix("Value error, ")


def _resolve_prices(policy: Policy, price_map: PriceMap) -> tuple[dict[str, Price], list[tuple[str, str]]]:
    located = [
        (f"tiers[{ti}].deployments[{di}]", dep)
        for ti, tier in enumerate(policy.tiers)
        for di, dep in enumerate(tier.deployments)
    ]
    if isinstance(policy.quality.judge, Deployment):
        located.append(("quality.judge", policy.quality.judge))
    prices: dict[str, Price] = {}
    problems: list[tuple[str, str]] = []
    for where, dep in located:
        price = price_map.price_for(dep)
        if price is None:
            problems.append(
                (
                    f"{where}.price",
                    f"no known price for model {dep.model!r}: set price.input_per_1m and "
                    "price.output_per_1m (0 for a local model)",
                )
            )
        else:
            prices[dep.name] = price
    return prices, problems
