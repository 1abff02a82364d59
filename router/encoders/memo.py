"""An encoder that remembers every text it has embedded, on disk between runs.

Cross-validation embeds the same prompts once per fold and once more per check; with a
transformer that is most of ``make router-cv``'s time. Same name as the wrapped encoder, same
vectors: an artifact trained through it is the one trained without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router.encoders.base import Encoder, Vectors

__all__ = ["MemoEncoder"]


class MemoEncoder:
    def __init__(self, encoder: Encoder, directory: Path) -> None:
        self.inner = encoder
        self.name, self.dim, self.inline = encoder.name, encoder.dim, encoder.inline
        self.path = directory / f"memo-{encoder.name}.npz"
        self._memo: dict[bytes, Vectors] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as data:
                self._memo = dict(zip((bytes(k) for k in data["keys"]), data["vectors"], strict=True))
        self._dirty = False

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha1(text.encode()).digest()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> Vectors:
        keys = [self._key(t) for t in texts]
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._memo}
        if todo:
            vectors = self.inner.encode(list(todo.values()), batch_size=batch_size, progress=progress)
            self._memo.update(zip(todo, vectors, strict=True))
            self._dirty = True
            self.save()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = self._memo[k]
        return out

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._memo), dtype="S20")
        with self.path.open("wb") as fh:
            np.savez(fh, keys=keys, vectors=np.stack(list(self._memo.values())).astype(np.float32))
        self._dirty = False
