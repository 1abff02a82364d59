"""The ASGI entry point for ``tierwise serve`` (a factory, so uvicorn workers each build one)."""

from __future__ import annotations

import os

from fastapi import FastAPI

from gateway.app import create_app
from gateway.router_loader import load_router
from gateway.settings import Settings

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return create_app(Settings(), router_factory=load_router)
