"""More sub-commands (dashboard, demo traffic, local model, keys), registered as they land."""

from __future__ import annotations

import argparse

__all__ = ["register_more"]


def register_more(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    return None
