"""``tierwise keys create | list | revoke``: the admin API from the shell."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _keys(args: argparse.Namespace) -> int:
    """Wrap the admin API: the master key comes from TIERWISE_MASTER_KEY, never from argv."""
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    from gateway.settings import Settings  # noqa: PLC0415

    master = Settings().master_key
    if master is None:
        print("set TIERWISE_MASTER_KEY to use the admin API", file=sys.stderr)
        return 2
    base = args.url.rstrip("/") + "/admin/keys"
    headers = {"authorization": f"Bearer {master.get_secret_value()}"}
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
