"""``tierwise demo-traffic``: a realistic mix of prompts through a running gateway."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def _demo(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from gateway.demo.traffic import load_prompts, run_demo  # noqa: PLC0415
    from gateway.settings import REPO_ROOT  # noqa: PLC0415

    shared = Path(args.shared) if args.shared else REPO_ROOT.parent / "shared" / "data" / "routing"
    prompts = load_prompts(shared)
    print(f"sending {args.requests} requests ({len(prompts)} distinct prompts) to {args.base_url}")
    counts = asyncio.run(run_demo(args.base_url, args.requests, args.concurrency, prompts))
    print(f"done: {counts}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo-traffic", help="send a realistic mix of prompts through a running gateway")
    demo.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    demo.add_argument("--requests", type=int, default=200)
    demo.add_argument("--concurrency", type=int, default=8)
    demo.add_argument("--shared", default=None, help="routing data directory to draw prompts from")
    demo.set_defaults(func=_demo)
