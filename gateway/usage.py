"""Token usage: read from an upstream's answer, or estimated when it gives none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Usage", "estimate_tokens", "usage_of"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_of(payload: Mapping[str, Any]) -> Usage | None:
    """OpenAI's ``usage`` object of a completion or stream chunk, if it has a usable one."""
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    try:
        return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    except (TypeError, ValueError):
        return None


def estimate_tokens(text: str) -> int:
    """~4 characters a token: the fallback when an upstream reports no usage."""
    return max(1, (len(text) + 3) // 4)
