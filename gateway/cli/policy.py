"""``tierwise policy check``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def _check(args: argparse.Namespace) -> int:
    from gateway.policy.loader import PolicyError, load_policy  # noqa: PLC0415

    try:
        loaded = load_policy(Path(args.file))
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    p = loaded.policy
    print(f"{args.file}: OK — {len(p.tiers)} tiers ({', '.join(t.name for t in p.tiers)}), {len(p.routes)} routes")
    for tier in p.tiers:
        for dep in tier.deployments:
            price = loaded.price(dep.name)
            usd = f"${price.input_per_1m:g} in / ${price.output_per_1m:g} out per 1M tokens"
            print(f"  {tier.name:<10} {dep.name:<24} {dep.model:<36} {usd}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = sub.add_parser("policy", help="policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    check.set_defaults(func=_check)
