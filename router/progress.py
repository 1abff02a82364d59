"""Progress lines of the router's long jobs (training, evaluation, adaptation), on stderr."""

from __future__ import annotations

import sys
import time

__all__ = ["log"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
