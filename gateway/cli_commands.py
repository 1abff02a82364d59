"""Sub-commands beyond serve/policy, each delegating to the module that owns the concept."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from router.cli import register as register_router  # noqa: PLC0415 - argparse only, no heavy import

    register_router(sub)
