"""``tierwise policy check`` and ``tierwise policy replay``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.policy.loader import LoadedPolicy

__all__ = ["register"]


def _check(args: argparse.Namespace) -> int:
    from gateway.policy.loader import PolicyError, load_policy  # noqa: PLC0415

    try:
        loaded = load_policy(Path(args.file))
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    p = loaded.policy
    if p.router is not None:  # the gateway loads it at start: a bad path must fail here, not there
        from router.artifact import ArtifactError, load_artifact, resolve_artifact  # noqa: PLC0415

        where = resolve_artifact(p.router.artifact, Path(args.file).parent)
        try:
            load_artifact(where)
        except ArtifactError as exc:
            print(f"{args.file}: router.artifact {p.router.artifact!r} (read as {where}): {exc}", file=sys.stderr)
            return 1
    print(f"{args.file}: OK — {len(p.tiers)} tiers ({', '.join(t.name for t in p.tiers)}), {len(p.routes)} routes")
    for tier in p.tiers:
        for dep in tier.deployments:
            price = loaded.price(dep.name)
            usd = f"${price.input_per_1m:g} in / ${price.output_per_1m:g} out per 1M tokens"
            cache = [
                f"${v:g} {what}"
                for what, v in (("cache read", price.cached_input_per_1m), ("cache write", price.cache_write_per_1m))
                if v is not None
            ]
            print(f"  {tier.name:<10} {dep.name:<24} {dep.model:<36} {usd}{'; ' + ', '.join(cache) if cache else ''}")
    from gateway.settings import Settings  # noqa: PLC0415

    unset = [
        f"{d.name} ({d.api_key_env})"
        for d in p.all_deployments
        if d.api_key_env and not Settings.credential(d.api_key_env)
    ]
    if unset:
        print(
            f"  warning: {', '.join(unset)}: the key variable is not set here, so the gateway would "
            "not use these deployments (GET /v1/models says which are unavailable)"
        )
    unpriced = loaded.caching_unpriced()
    if unpriced:
        print(
            f"  note: {', '.join(unpriced)}: no cache-read price known (litellm's map, or the policy's "
            "price.cached_input_per_1m); cached tokens are priced at the input rate"
        )
    return 0


def _replay(args: argparse.Namespace) -> int:
    """Estimated cost and judged quality of a candidate policy (or artifact) over logged traffic."""
    import orjson  # noqa: PLC0415

    from gateway.cli.ran import ledger_and_policy  # noqa: PLC0415
    from gateway.ledger import NoLedger  # noqa: PLC0415
    from gateway.policy.loader import PolicyError, load_policy  # noqa: PLC0415
    from gateway.quality.learn import parse_since  # noqa: PLC0415
    from gateway.quality.replay import ReplayError, replay  # noqa: PLC0415
    from gateway.quality.replay.report import table, write_png  # noqa: PLC0415
    from gateway.settings import Settings  # noqa: PLC0415

    if args.candidate is None and args.artifact is None:
        print("tierwise policy replay: give --candidate FILE, --artifact DIR or both", file=sys.stderr)
        return 2
    try:
        engine, policy_path, which = ledger_and_policy(Settings(), args.policy)
    except NoLedger as exc:
        print(f"tierwise policy replay: {exc}", file=sys.stderr)
        return 1
    try:
        since = parse_since(args.since) if args.since else None
        current = load_policy(policy_path)
        candidate = load_policy(Path(args.candidate)) if args.candidate else current
    except (PolicyError, ValueError) as exc:
        engine.dispose()
        print(exc, file=sys.stderr)
        return 1
    if args.artifact is not None:
        from router.artifact import resolve_artifact  # noqa: PLC0415

        candidate = _with_artifact(candidate, resolve_artifact(args.artifact, Path.cwd()))
    try:
        report = replay(engine, [("current", current), ("candidate", candidate)], since=since, since_label=args.since)
    except ReplayError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(which)
    print(table(report))
    if args.png:
        write_png(report, Path(args.png))
        print(f"wrote {args.png}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2))
        print(f"wrote {args.json}")
    return 0


def _with_artifact(loaded: LoadedPolicy, artifact: Path) -> LoadedPolicy:
    """The policy with its router reading another artifact (``--artifact``)."""
    from dataclasses import replace  # noqa: PLC0415

    from gateway.policy.models import RouterConfig  # noqa: PLC0415

    policy = loaded.policy
    cfg = (policy.router or RouterConfig()).model_copy(update={"artifact": str(artifact)})
    return replace(loaded, policy=policy.model_copy(update={"router": cfg}))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = sub.add_parser("policy", help="policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    check.set_defaults(func=_check)
    rp = psub.add_parser(
        "replay", help="estimated cost and judged quality of a candidate policy or artifact over logged traffic"
    )
    rp.add_argument(
        "--candidate", metavar="FILE", default=None, help="the policy file to compare (default: the current one)"
    )
    rp.add_argument(
        "--policy",
        metavar="FILE",
        default=None,
        help="the current policy (default: the one the gateway recorded running, else TIERWISE_POLICY_PATH)",
    )
    rp.add_argument(
        "--artifact",
        metavar="DIR",
        default=None,
        help="the candidate's router artifact (a directory, or a shipped name)",
    )
    rp.add_argument("--since", default=None, help="only requests judged this recently (7d, 12h)")
    rp.add_argument("--png", metavar="OUT", default=None, help="write a chart of cost against quality here")
    rp.add_argument("--json", metavar="OUT", default=None, help="write the figures here")
    rp.set_defaults(func=_replay)
