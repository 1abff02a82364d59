"""all-MiniLM-L6-v2 as ONNX, exported from the installed weights (no model hub, no file in git).

The export needs torch, which the gateway must not load: :func:`onnx_model` runs it once in a
subprocess and caches the result under a directory named by the weights' SHA-256 and the
exporting libraries' versions, so a changed model or toolchain never reuses a stale file. The
export is deterministic (same bytes on every run for the same inputs), so artifacts trained
against it stay valid across machines. The graph includes mean pooling and L2 normalisation:
it maps token ids to the sentence embedding sentence-transformers computes.

    python -m router.encoders.onnx_export [--out DIR]   # export now (``make setup`` does)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

from router.encoders.minilm import minilm_path
from router.offline import OFFLINE_ENV

__all__ = ["cache_dir", "export", "onnx_model"]

OPSET = 17
_FILES = {False: "minilm-fp32.onnx", True: "minilm-int8.onnx"}


def _weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        h.update((model_dir / name).read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Where the exported files live: ``$TIERWISE_CACHE_DIR`` or ``~/.cache/tierwise``, then a
    directory per (weights, torch, onnxruntime, opset)."""
    root = Path(os.environ.get("TIERWISE_CACHE_DIR") or Path.home() / ".cache" / "tierwise")
    key = f"{_weights_digest(minilm_path())}-torch{version('torch')}-ort{version('onnxruntime')}-op{OPSET}"
    return root / "onnx" / key


def onnx_model(quantized: bool = True) -> Path:
    """The exported model file, exporting it in a subprocess first if it is not cached."""
    path = cache_dir() / _FILES[quantized]
    if not path.is_file():
        env = {**os.environ, **OFFLINE_ENV}
        cmd = [sys.executable, "-m", "router.encoders.onnx_export", "--out", str(path.parent)]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if run.returncode != 0 or not path.is_file():
            raise RuntimeError(f"exporting MiniLM to ONNX failed ({' '.join(cmd)}):\n{run.stderr[-2000:]}")
    return path


def _write_atomically(out: Path, write: Any) -> None:
    """Write through a temporary file in the same directory, then rename: a reader never sees
    a partial file, and two processes exporting at once both leave a whole one."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp.onnx")
    os.close(fd)
    try:
        write(Path(tmp))
        Path(tmp).chmod(0o644)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def export(out: Path) -> tuple[Path, Path]:
    """Export fp32 and dynamic-int8 models into ``out``; returns their paths."""
    import torch  # noqa: PLC0415 - export only, never in the gateway process
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415
    from transformers import AutoModel  # noqa: PLC0415

    torch.manual_seed(0)
    bert: Any = AutoModel.from_pretrained(str(minilm_path()), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / _FILES[False], out / _FILES[True]
    ids = torch.ones(1, 16, dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}

    def write_fp32(tmp: Path) -> None:
        # The tracer warns about Python branches in the model's code and opset-9 indexing; they do
        # not change this graph (tests/test_router_onnx.py compares it with torch's embeddings),
        # and pages of them during `make setup` read as a failure.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: deterministic bytes and no onnxscript dependency.
            torch.onnx.export(
                Pooled().eval(),
                (ids, torch.ones_like(ids)),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
                external_data=False,
            )

    _write_atomically(fp32, write_fp32)
    # Weights to int8, activations quantised at run time: 4x less weight memory to stream per
    # token, which is what bounds a batch of one on a CPU. Per channel: per tensor left cosine
    # 0.957 (min 0.92) to the fp32 embedding on 300 sample prompts, per channel 0.994 (min 0.987).
    _write_atomically(
        int8, lambda tmp: quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    )
    return fp32, int8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="default: the cache directory the encoder reads")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else cache_dir()
    for path in export(out):
        print(f"{path} sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
