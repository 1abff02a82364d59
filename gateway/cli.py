"""The ``tierwise`` command: serve, policy check, router train/eval/calibrate, dashboard, ..."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - commands import only what they use

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["TIERWISE_POLICY_PATH"] = str(args.policy)
    os.environ["TIERWISE_HOST"] = args.host
    os.environ["TIERWISE_PORT"] = str(args.port)
    if args.no_router:
        os.environ["TIERWISE_LOAD_ROUTER"] = "false"
    supervisor = None
    if args.with_local:
        from gateway.local_model import LocalModelSupervisor  # noqa: PLC0415

        supervisor = LocalModelSupervisor.from_env()
        supervisor.start()
    try:
        uvicorn.run(
            "gateway.serve:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=False,
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def _policy_check(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierwise", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--policy", type=Path, default=Path(os.environ.get("TIERWISE_POLICY_PATH", "policies/default.yaml"))
    )
    serve.add_argument("--host", default=os.environ.get("TIERWISE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("TIERWISE_PORT", "8000")))
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--with-local", action="store_true", help="also start and supervise the local llama.cpp model")
    serve.add_argument("--no-router", action="store_true", help="do not load the router (auto routes use their tier)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    policy = sub.add_parser("policy", help="policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    check.set_defaults(func=_policy_check)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands owned by other modules register themselves here (router, dashboard, local, keys)."""
    from gateway import cli_commands  # noqa: PLC0415

    cli_commands.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
