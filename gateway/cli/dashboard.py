"""``tierwise dashboard``: the Streamlit dashboard, read-only, on the gateway's database."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["register"]


def _dashboard(args: argparse.Namespace) -> int:
    from gateway.settings import Settings  # noqa: PLC0415

    settings = Settings()
    app = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    # The viewer toolbar travels with the app: dashboard/.streamlit/config.toml
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true"]
    cmd += ["--server.port", str(args.port), "--server.address", args.host, "--browser.gatherUsageStats", "false"]
    where = settings.sqlite_file or settings.database_url.split("@")[-1]
    print(f"dashboard on http://{args.host}:{args.port} reading {where}", flush=True)
    # Become streamlit rather than wait on it: a stop signal (docker, systemd, a test's teardown)
    # must reach the server itself, or it lives on, orphaned, holding the port.
    os.execv(sys.executable, cmd)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dash = sub.add_parser("dashboard", help="the Streamlit dashboard (read-only, same database as the gateway)")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8501)
    dash.set_defaults(func=_dashboard)
