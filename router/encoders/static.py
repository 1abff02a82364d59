"""A static encoder distilled from all-MiniLM-L6-v2 (the model2vec recipe, done by hand):
every WordPiece token's MiniLM output embedding, reduced by PCA, looked up and mean-pooled.

No transformer runs at serve time: encoding a prompt is a tokenizer call and an average, well
under a millisecond. The vectors ship in ``static_minilm.npz``; ``python -m
router.encoders.static --distill`` rebuilds them from the installed MiniLM.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.encoders.base import Vectors
from router.encoders.minilm import minilm_path
from router.offline import offline

__all__ = ["StaticEncoder", "distill", "static_vectors_path"]


def static_vectors_path() -> Path:
    return Path(__file__).resolve().parent / "static_minilm.npz"


class StaticEncoder:
    name = "static-minilm-l6-v2"
    inline = True  # a tokenizer call and an average: under 0.5 ms up to 2k tokens (bench/router_latency.py)

    def __init__(self, vectors: Path | None = None, max_tokens: int = 512) -> None:
        from tokenizers import Tokenizer  # noqa: PLC0415 - fast Rust tokenizer, no torch

        path = vectors or static_vectors_path()
        if not path.exists():
            raise RuntimeError(f"{path} is missing: run `python -m router.encoders.static --distill`")
        with np.load(path, allow_pickle=False) as data:
            self._vectors = np.asarray(data["vectors"], dtype=np.float32)
            self._weights = np.asarray(data["weights"], dtype=np.float32)
        self.dim = int(self._vectors.shape[1])
        self._tok: Any = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_tokens)
        self._max = max_tokens

    def encode(self, texts: Sequence[str], *, batch_size: int = 256, progress: bool = False) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, enc in enumerate(self._tok.encode_batch(list(texts), add_special_tokens=False)):
            ids = np.asarray(enc.ids[-self._max :], dtype=np.int64)
            if ids.size:
                w = self._weights[ids]
                v = (self._vectors[ids] * w[:, None]).sum(axis=0) / max(float(w.sum()), 1e-6)
                out[i] = v / max(float(np.linalg.norm(v)), 1e-9)
        return out


def distill(out: Path, dims: int = 256, batch: int = 512) -> Path:
    """Embed every vocabulary token with MiniLM ([CLS] tok [SEP], mean-pooled), PCA to ``dims``."""
    offline()
    import torch  # noqa: PLC0415
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    from sklearn.decomposition import PCA  # noqa: PLC0415

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    bert: Any = model[0].auto_model
    tok = model.tokenizer
    vocab = tok.vocab_size
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    rows = []
    with torch.inference_mode():
        for start in range(0, vocab, batch):
            ids = torch.arange(start, min(vocab, start + batch))
            inp = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = bert(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state
            rows.append(hidden.mean(dim=1).numpy())
            print(f"\rdistilling {min(vocab, start + batch)}/{vocab} tokens", end="", flush=True)
    print()
    full = np.vstack(rows).astype(np.float32)
    reduced = PCA(n_components=dims, random_state=0).fit_transform(full).astype(np.float32)
    # SIF-style weights: WordPiece ids roughly follow frequency, so rarer (later) tokens weigh more.
    rank = np.arange(1, vocab + 1, dtype=np.float32)
    weights = (np.log1p(rank) / np.log1p(vocab)).astype(np.float32)
    weights[[cls_id, sep_id, tok.pad_token_id]] = 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        np.savez_compressed(fh, vectors=reduced.astype(np.float16), weights=weights)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {hashlib.sha256(out.read_bytes()).hexdigest()[:12]})"
    )
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--distill", action="store_true")
    ap.add_argument("--dims", type=int, default=256)
    a = ap.parse_args()
    if a.distill:
        distill(static_vectors_path(), a.dims)
