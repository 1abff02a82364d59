"""Router artifacts: arrays in ``model.npz`` (no pickle) and ``meta.json``, checksummed.

``meta.json`` records the encoder, tiers, provenance of the training data and its metrics,
and the SHA-256 of ``model.npz``; loading refuses a file whose checksum, keys or shapes do not
match, so a corrupted or tampered artifact never routes traffic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.estimators import LENGTH_SCALE, TierModels

__all__ = ["Artifact", "ArtifactError", "default_artifact_dir", "load_artifact", "resolve_artifact", "save_artifact"]

FORMAT = "tierwise-router/1"
_ARRAYS = ("quality_w", "quality_b", "cost_w", "cost_b")


class ArtifactError(Exception):
    """An artifact that cannot be trusted or used."""


@dataclass
class Artifact:
    models: TierModels
    encoder: str
    max_chars: int
    meta: dict[str, Any] = field(default_factory=dict)
    length_scale: float = LENGTH_SCALE  # how log length enters the features (see estimators)

    @property
    def tiers(self) -> list[str]:
        return self.models.tiers

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unversioned"))


def default_artifact_dir() -> Path:
    return Path(__file__).resolve().parent / "artifacts" / "default"


def resolve_artifact(value: str, relative_to: Path | None = None) -> Path:
    """A shipped artifact by name (``default``, ``minilm``, ``two-stage``), else a directory;
    a relative one is taken against ``relative_to`` (a policy's folder) when given."""
    shipped = default_artifact_dir().parent / value
    if "/" not in value and shipped.is_dir():
        return shipped
    path = Path(value)
    return path if path.is_absolute() or relative_to is None else relative_to / path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_artifact(artifact: Artifact, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    npz = out / "model.npz"
    m = artifact.models
    # Written through a file handle so numpy does not add a suffix; no object arrays, no pickle.
    with npz.open("wb") as fh:
        np.savez(fh, quality_w=m.quality_w, quality_b=m.quality_b, cost_w=m.cost_w, cost_b=m.cost_b)
    digest = _sha256(npz)
    meta = {
        **artifact.meta,
        "format": FORMAT,
        "encoder": artifact.encoder,
        "max_chars": artifact.max_chars,
        "length_scale": artifact.length_scale,
        "tiers": m.tiers,
        "feature_dim": int(m.quality_w.shape[1]),
        "model_sha256": digest,
    }
    meta.setdefault("version", f"{artifact.encoder}-{digest[:12]}")
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    artifact.meta = meta
    return out


def load_artifact(path: Path) -> Artifact:
    meta_path, npz = path / "meta.json", path / "model.npz"
    if not meta_path.is_file() or not npz.is_file():
        raise ArtifactError(f"{path}: not a router artifact (needs meta.json and model.npz)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta_path}: unreadable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{meta_path}: unknown format {meta.get('format') if isinstance(meta, dict) else None!r}")
    digest = _sha256(npz)
    if digest != meta.get("model_sha256"):
        raise ArtifactError(f"{npz}: checksum mismatch (file is corrupted or was modified after training); refusing it")
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k], dtype=np.float32) for k in _ARRAYS}
    except (ValueError, KeyError, OSError) as exc:
        raise ArtifactError(f"{npz}: unreadable arrays ({exc})") from exc
    tiers = meta.get("tiers")
    dim = meta.get("feature_dim")
    if not isinstance(tiers, list) or len(tiers) < 2 or not isinstance(dim, int):
        raise ArtifactError(f"{meta_path}: missing tiers or feature_dim")
    expected = {
        "quality_w": (len(tiers), dim),
        "quality_b": (len(tiers),),
        "cost_w": (len(tiers), dim),
        "cost_b": (len(tiers),),
    }
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise ArtifactError(f"{npz}: {key} has shape {arrays[key].shape}, expected {shape}")
        if not np.all(np.isfinite(arrays[key])):
            raise ArtifactError(f"{npz}: {key} holds non-finite values")
    models = TierModels(
        [str(t) for t in tiers], arrays["quality_w"], arrays["quality_b"], arrays["cost_w"], arrays["cost_b"]
    )
    return Artifact(
        models=models,
        encoder=str(meta["encoder"]),
        max_chars=int(meta.get("max_chars", 1000)),
        meta=meta,
        # Artifacts written before the scale was recorded used 0.1.
        length_scale=float(meta.get("length_scale", 0.1)),
    )
