"""The router never downloads a model: the Hugging Face libraries are told so here, once."""

from __future__ import annotations

import os

__all__ = ["OFFLINE_ENV", "offline"]

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def offline() -> None:
    """Before sentence-transformers or transformers is imported (they read it at import)."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
