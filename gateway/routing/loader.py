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
    from router.artifact import default_artifact_dir  # noqa: PLC0415

    shipped = default_artifact_dir().parent / cfg.artifact
    if "/" not in cfg.artifact and shipped.is_dir():  # a shipped artifact by name: default, static
        return shipped
    path = Path(cfg.artifact)
    return path if path.is_absolute() else loaded.source.parent / path


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
