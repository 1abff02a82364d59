"""Tierwise's router: predicted quality and cost per tier, one knob, no HTTP.

Importing this package loads nothing heavy; the encoder loads when a ``Router`` is built.
"""

from router.artifact import Artifact, ArtifactError, default_artifact_dir, load_artifact, save_artifact
from router.core import Decision, Router, choose

__all__ = [
    "Artifact",
    "ArtifactError",
    "Decision",
    "Router",
    "choose",
    "default_artifact_dir",
    "load_artifact",
    "save_artifact",
]
