"""``tierwise ledger``: maintenance of the ledger database the gateway writes."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["register"]


def _rebuild_rollups(args: argparse.Namespace) -> int:
    from gateway.ledger import NoLedger, create_schema, read_engine  # noqa: PLC0415
    from gateway.ledger.rollups import rebuild  # noqa: PLC0415
    from gateway.settings import Settings  # noqa: PLC0415

    settings = Settings()
    try:
        engine = read_engine(settings.database_url)
    except NoLedger as exc:
        print(exc, file=sys.stderr)
        return 1
    create_schema(engine)  # a ledger from before rollups gets their table first
    started = time.monotonic()
    with engine.begin() as conn:
        groups = rebuild(conn)
    print(
        f"recounted the hourly rollups from the ledger's rows: {groups:,} groups in {time.monotonic() - started:.1f}s"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = sub.add_parser("ledger", help="ledger maintenance (TIERWISE_DATABASE_URL)")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True)
    rebuild = lsub.add_parser(
        "rebuild-rollups",
        help="recount the hourly rollups the dashboard reads from the ledger's rows (one transaction; "
        "the gateway keeps them current as it writes, so this is for repairs)",
    )
    rebuild.set_defaults(func=_rebuild_rollups)
