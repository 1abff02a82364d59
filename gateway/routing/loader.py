"""Build the router the policy asks for (the one bridge from gateway to ``router``)."""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.policy.loader import LoadedPolicy
from gateway.routing.resolve import RouterLike

__all__ = ["artifact_dir", "load_router"]

log = logging.getLogger("tierwise.router")


def artifact_dir(loaded: LoadedPolicy) -> Path | None:
    cfg = loaded.policy.router
    if cfg is None or not cfg.enabled:
        return None
    from router.artifact import resolve_artifact  # noqa: PLC0415

    return resolve_artifact(cfg.artifact, loaded.source.parent)


def load_router(loaded: LoadedPolicy) -> RouterLike | None:
    path = artifact_dir(loaded)
    if path is None:
        log.info("router disabled by policy; auto routes use their fixed tier")
        return None
    from router import Router  # noqa: PLC0415 - sentence-transformers loads here, once

    assert loaded.policy.router is not None
    router = Router.load(path, cache_size=loaded.policy.router.cache_size)
    log.info("router %s loaded from %s (tiers %s)", router.version, path, list(router.tiers))
    return router
