"""Token usage: read from an upstream's answer, or estimated when it gives none."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["IMAGE_TOKENS", "Usage", "estimate_tokens", "prompt_tokens_bound", "usage_of"]


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


IMAGE_TOKENS = 2_000  # above the largest per-image charge of the providers we price (~1.6k)


def prompt_tokens_bound(body: dict[str, Any], chars_per_token: int = 2) -> int:
    """Prompt tokens the provider may bill for this request: every character of it (messages,
    tools, schemas, tool results), plus a worst case per image, whose data is not billed by size."""
    images = 0
    image_bytes = 0
    for part in _parts(body):
        url = (part.get("image_url") or {}).get("url") if part.get("type") == "image_url" else None
        if isinstance(url, str):
            images += 1
            image_bytes += len(url)
    return (len(orjson.dumps(body)) - image_bytes) // chars_per_token + 16 + IMAGE_TOKENS * images


def _parts(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            yield from (p for p in content if isinstance(p, dict))
