"""``tierwise local serve``: the bundled local model server on loopback, supervised."""

from __future__ import annotations

import argparse
import signal
import threading

__all__ = ["register"]


def _local_serve(args: argparse.Namespace) -> int:
    from gateway.local.supervisor import LocalModelSupervisor  # noqa: PLC0415
    from gateway.settings import LocalModelSettings  # noqa: PLC0415

    supervisor = LocalModelSupervisor(LocalModelSettings())
    took = supervisor.start()
    print(f"local model {supervisor.alias} ready at {supervisor.base_url} in {took:.1f}s (Ctrl-C stops it)")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = sub.add_parser("local", help="the local model server (llama.cpp + SmolLM2)")
    lsub = local.add_subparsers(dest="local_command", required=True)
    serve = lsub.add_parser("serve", help="start and supervise the local model server on loopback")
    serve.set_defaults(func=_local_serve)
