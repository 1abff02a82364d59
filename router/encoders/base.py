"""The encoder seam: text in, fixed-size float vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Encoder", "Vectors"]

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Encoder(Protocol):
    """Anything that embeds prompts. ``name`` is recorded in artifacts: an artifact only
    loads with the encoder it was trained with."""

    name: str
    dim: int
    # Fast enough (well under a millisecond) to encode on the gateway's event loop.
    inline: bool

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> Vectors: ...
