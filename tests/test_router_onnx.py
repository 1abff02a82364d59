"""MiniLM through ONNX Runtime: the same embeddings as sentence-transformers' torch MiniLM, no
torch in the process that routes, and an export that reproduces the shipped artifact's file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from router import default_artifact_dir
from router.encoders import build_encoder
from router.encoders.minilm import MiniLMEncoder
from router.encoders.onnx_export import onnx_model
from router.encoders.onnx_minilm import OnnxMiniLMEncoder
from tests.conftest import REPO

# Short enough for every encoder to see the whole prompt (no truncation differences).
SAMPLES = [
    "Thanks!",
    "What is 2+2?",
    "Write a haiku about autumn",
    "Which of these is a renewable resource?\nA) coal\nB) wind\nC) oil\nD) natural gas\nAnswer:",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n# make this iterative",
    "Explain the difference between TCP and UDP, with one protocol built on each.",
    "Résumé des ventes du troisième trimestre, en trois points.",
    "Prove that the square root of 2 is irrational.",
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return MiniLMEncoder(threads=2).encode(SAMPLES)


def test_fp32_export_matches_torch(torch_vectors: np.ndarray) -> None:
    got = OnnxMiniLMEncoder(quantized=False, threads=2).encode(SAMPLES)
    assert (got * torch_vectors).sum(axis=1).min() >= 0.9999


def test_int8_stays_close_to_torch(torch_vectors: np.ndarray) -> None:
    # Per-channel dynamic int8 against fp32, measured (bench/README.md): cosine 0.994 mean, 0.987
    # min on 300 Arena-Hard/RouterBench/MMLU prompts; 0.991 mean, 0.973 min ("ok", "Thanks!") on the
    # 37 conversational ones, where a couple of tokens quantise coarsest.
    cos = (OnnxMiniLMEncoder(threads=2).encode(SAMPLES) * torch_vectors).sum(axis=1)
    assert cos.min() >= 0.97 and cos.mean() >= 0.99, cos


def test_long_prompts_keep_their_tail_and_batches_match_singles() -> None:
    enc = build_encoder("minilm-l6-v2-onnx-int8-t32")
    assert isinstance(enc, OnnxMiniLMEncoder)
    long = "filler words about nothing in particular " * 50 + "so what is the capital of Peru?"
    ids = enc.token_ids([long])[0]
    assert len(ids) == 32
    assert ids[-3:-1] == enc.token_ids(["Peru?"])[0][1:-1][-2:]  # the question survives truncation
    batch = enc.encode([long, "hi", "What is 2+2?"])
    singles = np.vstack([enc.encode([t]) for t in (long, "hi", "What is 2+2?")])
    np.testing.assert_array_equal(batch, singles)  # a prompt embeds the same in any company


def test_head_and_tail_keeps_the_instruction_and_the_question() -> None:
    enc = build_encoder("minilm-l6-v2-onnx-int8-t32-h8")
    assert isinstance(enc, OnnxMiniLMEncoder) and enc.name == "minilm-l6-v2-onnx-int8-t32-h8"
    instruction, question = "Translate into French:", "so what is the capital of Peru?"
    long = instruction + " filler words about nothing in particular" * 50 + " " + question
    ids = enc.token_ids([long])[0]
    head, tail = enc.token_ids([instruction])[0][1:-1], enc.token_ids([question])[0][1:-1]
    assert len(ids) == 32 and ids[1 : 1 + len(head)] == head and ids[-1 - len(tail) : -1] == tail
    assert enc.token_ids(["What is 2+2?"]) == build_encoder("minilm-l6-v2-onnx-int8-t32").token_ids(["What is 2+2?"])
    with pytest.raises(ValueError, match="no tail"):
        build_encoder("minilm-l6-v2-onnx-int8-t32-h30")


def test_export_reproduces_the_shipped_artifacts_model_file() -> None:
    meta = json.loads((default_artifact_dir().parent / "minilm" / "meta.json").read_text())
    expected = meta["encoder_provenance"]["model_sha256"]
    assert hashlib.sha256(onnx_model(quantized=True).read_bytes()).hexdigest() == expected


def test_routing_with_minilm_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from router import Router, default_artifact_dir\n"
        "for name in ('minilm', 'two-stage'):\n"
        "    r = Router.load(default_artifact_dir().parent / name)\n"
        "    d = [r.decide(p) for p in ('Thanks!', 'Prove Fermat\\'s little theorem.' * 20)]\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout
