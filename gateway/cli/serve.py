"""``tierwise serve``: the gateway (optionally with the local model server beside it)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["app_factory", "register"]

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.settings import Settings


def app_factory(settings: Settings) -> FastAPI:
    """What each worker calls to build its app. The heavy imports happen here, inside the worker's
    server, not while the worker unpickles its config (uvicorn's health check is already running)."""
    from gateway.app import create_app  # noqa: PLC0415
    from gateway.routing.loader import load_router  # noqa: PLC0415

    return create_app(settings, router_factory=load_router)


def _http_protocol() -> type[asyncio.Protocol] | str:
    """Ours where httptools is installed (``uvicorn[standard]``), else uvicorn's own choice."""
    try:
        from gateway.cli.http_protocol import CoalescingHttpToolsProtocol  # noqa: PLC0415
    except ImportError:
        return "auto"
    return CoalescingHttpToolsProtocol


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - commands import only what they use
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    from gateway.cli.announce import AnnouncingServer, serving_line  # noqa: PLC0415
    from gateway.settings import Settings, offline_environment  # noqa: PLC0415

    offline_environment()
    given = {"policy_path": args.policy, "host": args.host, "port": args.port, "workers": args.workers}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if args.no_router:
        overrides["load_router"] = False
    settings = Settings(**overrides)
    if refusal := _multi_worker_refusal(settings):
        print(refusal, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _raise_open_file_limit()
    supervisor = None
    if args.with_local:
        from gateway.local.supervisor import LocalModelSupervisor  # noqa: PLC0415

        supervisor = LocalModelSupervisor(settings.local)
        supervisor.start()
    # Settings travel to each worker inside the (pickled) factory, not through the environment.
    config = uvicorn.Config(
        functools.partial(app_factory, settings),
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=args.log_level,
        access_log=False,
        http=_http_protocol(),
        # A worker loads the router and the policy before it answers; on a busy 2-core machine
        # that can take longer than uvicorn's default 5 s, and it would be killed as hung.
        timeout_worker_healthcheck=60,
    )
    metrics_dir = _metrics_dir() if settings.workers > 1 else None
    try:
        if settings.workers > 1:
            sock = config.bind_socket()
            print(serving_line(settings, sock.getsockname()[1]), flush=True)  # the workers share it
            Multiprocess(config, sockets=[sock]).run()
        else:
            AnnouncingServer(config, settings).run()
    finally:
        if supervisor is not None:
            supervisor.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _raise_open_file_limit() -> None:
    """Every open stream holds two sockets (client and upstream): a soft limit of 1,024 open files,
    common on Linux, would refuse connections from about 500 streams on. The hard limit is the
    administrator's; up to it is ours to take, as Go's runtime and nginx's workers do. Workers
    inherit it."""
    import resource  # noqa: PLC0415 - POSIX only, like the rest of serve

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """uvicorn stops gracefully on SIGTERM, then raises the signal again under the handler it
    found. Under the default one the process dies at once and skips the ``finally`` that stops the
    local model server, which was left running and holding its port (``docker stop``, systemd)."""
    raise SystemExit(128 + signum)


def _multi_worker_refusal(settings: Settings) -> str | None:
    """Several workers each keep their own in-process budget and rate counters: every budget
    would silently grow by the number of workers. Refuse, unless the counters are shared."""
    if settings.workers == 1 or settings.redis_url:
        return None
    from gateway.keys import KeyStore  # noqa: PLC0415
    from gateway.ledger import make_engine  # noqa: PLC0415

    engine = make_engine(settings.database_url)
    try:
        keyed = settings.master_key is not None or KeyStore(engine).any_keys()
    finally:
        engine.dispose()
    if not keyed:
        return None
    return (
        f"tierwise serve --workers {settings.workers}: API keys are in use, and with more than one worker their "
        "budgets and rate limits need counters the workers share. Set TIERWISE_REDIS_URL (e.g. "
        "redis://127.0.0.1:6379/0), or run one worker."
    )


def _metrics_dir() -> str | None:
    """A fresh directory for this run's metrics, shared by its workers (None: the operator's own).

    prometheus_client's multiprocess mode is switched on by its own environment variable, read
    when the library is imported: so it is set here, before any worker starts, and the workers
    inherit it. (Tierwise's own settings are read by Settings only; this is a library's.)
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="tierwise-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gateway (settings: TIERWISE_* variables; flags override them)")
    serve.add_argument("--policy", type=Path, default=None, help="policy file (TIERWISE_POLICY_PATH)")
    serve.add_argument("--host", default=None, help="listen address (TIERWISE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (TIERWISE_PORT, default 8000)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (TIERWISE_WORKERS, default 1)")
    serve.add_argument("--with-local", action="store_true", help="also start and supervise the local llama.cpp model")
    serve.add_argument("--no-router", action="store_true", help="do not load the router (auto routes use their tier)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)
