"""Encoders by name: artifacts record the name, the registry builds the encoder."""

from __future__ import annotations

from collections.abc import Callable

from router.encoders.base import Encoder

__all__ = ["available_encoders", "build_encoder", "register_encoder"]

_FACTORIES: dict[str, Callable[[], Encoder]] = {}


def register_encoder(name: str, factory: Callable[[], Encoder]) -> None:
    _FACTORIES[name] = factory


def _builtin() -> None:
    if _FACTORIES:
        return

    def minilm() -> Encoder:
        from router.encoders.minilm import MiniLMEncoder  # noqa: PLC0415 - heavy import on demand

        return MiniLMEncoder()

    def static() -> Encoder:
        from router.encoders.static import StaticEncoder  # noqa: PLC0415

        return StaticEncoder()

    register_encoder("minilm-l6-v2", minilm)
    register_encoder("static-minilm-l6-v2", static)


def available_encoders() -> list[str]:
    _builtin()
    return sorted(_FACTORIES)


def build_encoder(name: str) -> Encoder:
    _builtin()
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(f"unknown encoder {name!r}; known: {sorted(_FACTORIES)}") from None
    return factory()
