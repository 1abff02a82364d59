"""``tierwise demo-traffic``: a realistic mix of prompts through a running gateway."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def _demo(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    from gateway.demo.traffic import DemoSummary, load_prompts, run_demo  # noqa: PLC0415
    from gateway.settings import REPO_ROOT  # noqa: PLC0415

    shared = Path(args.shared) if args.shared else REPO_ROOT.parent / "shared" / "data" / "routing"
    prompts = load_prompts(shared)
    print(f"sending {args.requests} requests ({len(prompts)} distinct prompts) to {args.base_url}", flush=True)
    # A bar on a terminal; in a log, a line every tenth of the run.
    tty = sys.stderr.isatty()
    every = max(1, args.requests // 10)
    started = time.monotonic()
    with tqdm(total=args.requests, unit="req", disable=not tty, dynamic_ncols=True) as bar:

        def advance(summary: DemoSummary) -> None:
            tiers = " ".join(f"{t}={n}" for t, n in sorted(summary.by_tier.items()))
            if tty:
                bar.update()
                bar.set_postfix_str(tiers, refresh=False)
            elif summary.requests % every == 0 or summary.requests == args.requests:
                took = time.monotonic() - started
                print(f"  {summary.requests}/{args.requests} in {took:.0f}s: {tiers}", file=sys.stderr, flush=True)

        summary = asyncio.run(
            run_demo(args.base_url, args.requests, args.concurrency, prompts, on_done=advance, over_s=args.over)
        )
    print("\n".join(summary.lines()))
    if summary.by_status.get("200", 0):
        return 0
    print(f"no request was answered: is a gateway running at {args.base_url}? (`make serve` or `make serve-fake`)")
    return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo-traffic", help="send a realistic mix of prompts through a running gateway")
    demo.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    demo.add_argument("--requests", type=int, default=200)
    demo.add_argument("--concurrency", type=int, default=8)
    demo.add_argument(
        "--over", type=float, default=0.0, metavar="SECONDS", help="start the requests evenly over this long"
    )
    demo.add_argument("--shared", default=None, help="routing data directory to draw prompts from")
    demo.set_defaults(func=_demo)
