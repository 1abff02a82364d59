"""Encoders by name: artifacts record the name, the registry builds the encoder."""

from __future__ import annotations

import re
from collections.abc import Callable

from router.encoders.base import Encoder

__all__ = ["available_encoders", "build_encoder", "register_encoder"]

_FACTORIES: dict[str, Callable[[], Encoder]] = {}
# MiniLM through ONNX Runtime: the name says the weights' precision, how many tokens it reads
# and how many of them come from the prompt's head (the rest from its tail).
_ONNX = re.compile(r"minilm-l6-v2-onnx-(int8|fp32)-t(\d+)(?:-h(\d+))?")


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
    return [*sorted(_FACTORIES), "minilm-l6-v2-onnx-{int8|fp32}-t<tokens>[-h<head tokens>]"]


def build_encoder(name: str, *, threads: int = 1) -> Encoder:
    """``threads``: ONNX Runtime's intra-op threads (1 at serve time: a decision runs beside
    other requests; more for training, where the whole machine is free)."""
    _builtin()
    if name in _FACTORIES:
        return _FACTORIES[name]()
    onnx = _ONNX.fullmatch(name)
    if onnx is not None:
        from router.encoders.onnx_minilm import OnnxMiniLMEncoder  # noqa: PLC0415

        return OnnxMiniLMEncoder(
            quantized=onnx[1] == "int8", max_tokens=int(onnx[2]), head_tokens=int(onnx[3] or 0), threads=threads
        )
    raise KeyError(f"unknown encoder {name!r}; known: {available_encoders()}")
