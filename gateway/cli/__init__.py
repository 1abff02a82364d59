"""The ``tierwise`` command. Each command group is a module with ``register(subparsers)``;
a command imports what it uses when it runs, so ``tierwise --help`` stays instant."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from gateway.cli import dashboard, demo, keys, ledger, local, policy, router, serve

__all__ = ["build_parser", "main"]

_GROUPS = (serve, policy, router, keys, ledger, dashboard, demo, local)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierwise",
        description="Tierwise: an OpenAI-compatible gateway that sends each request to the cheapest "
        "model tier good enough for it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step is noise at start
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request (demo-traffic, keys, probes)
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
