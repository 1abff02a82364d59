"""``tierwise router ...`` sub-commands (filled in by the router work)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    return None
