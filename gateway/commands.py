"""More sub-commands: the local model, the dashboard, demo traffic."""

from __future__ import annotations

import argparse
import signal
import threading

__all__ = ["register_more"]


def _local_serve(args: argparse.Namespace) -> int:
    from gateway.local_model import LocalModelSupervisor  # noqa: PLC0415

    supervisor = LocalModelSupervisor.from_env()
    took = supervisor.start()
    cfg = supervisor.config
    print(f"local model {cfg.alias} ready at {cfg.base_url} in {took:.1f}s (Ctrl-C stops it)")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.headless",
        "true",
        "--server.port",
        str(args.port),
        "--server.address",
        args.host,
        "--browser.gatherUsageStats",
        "false",
    ]
    print(
        f"dashboard on http://{args.host}:{args.port} reading {os.environ.get('TIERWISE_DATABASE_URL', 'sqlite:///tierwise.db')}",
        flush=True,
    )
    # Become streamlit rather than wait on it: a stop signal (docker, systemd, a test's teardown)
    # must reach the server itself, or it lives on, orphaned, holding the port.
    os.execv(sys.executable, cmd)


def _demo(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from gateway.demo import load_prompts, run_demo  # noqa: PLC0415

    shared = Path(args.shared) if args.shared else Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"
    prompts = load_prompts(shared)
    print(f"sending {args.requests} requests ({len(prompts)} distinct prompts) to {args.base_url}")
    counts = asyncio.run(run_demo(args.base_url, args.requests, args.concurrency, prompts))
    print(f"done: {counts}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    """Wrap the admin API: the master key comes from TIERWISE_MASTER_KEY, never from argv."""
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    master = os.environ.get("TIERWISE_MASTER_KEY")
    if not master:
        print("set TIERWISE_MASTER_KEY to use the admin API", file=sys.stderr)
        return 2
    base = args.url.rstrip("/") + "/admin/keys"
    headers = {"authorization": f"Bearer {master}"}
    if args.keys_command == "create":
        fields = {
            k: v
            for k, v in {
                "owner": args.owner,
                "team": args.team,
                "allowed_routes": args.routes,
                "allowed_tiers": args.tiers,
                "budget_daily_usd": args.budget_daily,
                "budget_monthly_usd": args.budget_monthly,
                "rpm_limit": args.rpm,
                "tpm_limit": args.tpm,
                "expires_at": args.expires,
            }.items()
            if v is not None
        }
        r = httpx.post(base, json=fields, headers=headers)
    elif args.keys_command == "list":
        r = httpx.get(base, headers=headers)
    else:
        r = httpx.delete(f"{base}/{args.key_id}", headers=headers)
    print(json.dumps(r.json(), indent=2))
    if r.status_code < 400 and args.keys_command == "create":
        print("store this key now: it is not shown again", file=sys.stderr)
    return 0 if r.status_code < 400 else 1


def register_more(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke virtual keys (admin API; TIERWISE_MASTER_KEY)")
    keys.add_argument("--url", default="http://127.0.0.1:8000")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create")
    create.add_argument("--owner")
    create.add_argument("--team")
    create.add_argument("--routes", nargs="*", help="allowed route/tier/deployment names")
    create.add_argument("--tiers", nargs="*", help="allowed tiers")
    create.add_argument("--budget-daily", type=float)
    create.add_argument("--budget-monthly", type=float)
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--expires", help="ISO 8601 time")
    ksub.add_parser("list")
    revoke = ksub.add_parser("revoke")
    revoke.add_argument("key_id")
    keys.set_defaults(func=_keys)

    dash = sub.add_parser("dashboard", help="the Streamlit dashboard (read-only, same database as the gateway)")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8501)
    dash.set_defaults(func=_dashboard)
    demo = sub.add_parser("demo-traffic", help="send a realistic mix of prompts through a running gateway")
    demo.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    demo.add_argument("--requests", type=int, default=200)
    demo.add_argument("--concurrency", type=int, default=8)
    demo.add_argument("--shared", default=None, help="routing data directory to draw prompts from")
    demo.set_defaults(func=_demo)

    local = sub.add_parser("local", help="the local model server (llama.cpp + SmolLM2)")
    lsub = local.add_subparsers(dest="local_command", required=True)
    serve = lsub.add_parser("serve", help="start and supervise the local model server on loopback")
    serve.set_defaults(func=_local_serve)
