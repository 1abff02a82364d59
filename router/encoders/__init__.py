"""Prompt encoders behind one protocol, built by name."""

from router.encoders.base import Encoder, Vectors
from router.encoders.registry import available_encoders, build_encoder, register_encoder

__all__ = ["Encoder", "Vectors", "available_encoders", "build_encoder", "register_encoder"]
