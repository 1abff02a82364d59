"""The embedding memo behind `make router-cv`: same vectors as the encoder, kept between runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from router.encoders import build_encoder
from router.encoders.memo import MemoEncoder


def test_memo_returns_the_encoders_vectors_and_persists(tmp_path: Path) -> None:
    static = build_encoder("static-minilm-l6-v2")
    texts = ["Thanks!", "What is 2+2?", "Thanks!", "Write a haiku about autumn"]
    memo = MemoEncoder(static, tmp_path)
    assert (memo.name, memo.dim, memo.inline) == (static.name, static.dim, static.inline)
    np.testing.assert_array_equal(memo.encode(texts), static.encode(texts))
    assert memo.path.is_file()
    again = MemoEncoder(static, tmp_path)
    assert len(again._memo) == 3  # each distinct text embedded once
    np.testing.assert_array_equal(again.encode(texts[:2]), static.encode(texts[:2]))
