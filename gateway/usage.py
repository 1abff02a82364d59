"""Token usage: read from an upstream's answer, or estimated when it gives none."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["IMAGE_TOKENS", "Usage", "estimate_tokens", "prompt_tokens_bound", "usage_of"]


@dataclass(frozen=True)
class Usage:
    """One answer's tokens by the kind each is billed as.

    ``prompt_tokens`` counts every input token, cache reads and writes included (OpenAI's rule);
    ``cache_write_1h_tokens`` are the part of the writes Anthropic keeps for an hour (billed
    higher than its 5-minute writes); ``reasoning_tokens`` are inside ``completion_tokens``.
    """

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cache_read_tokens - self.cache_write_tokens

    def uncached(self) -> Usage:
        """The same tokens as if nothing were read from or written to a prompt cache."""
        return Usage(self.prompt_tokens, self.completion_tokens, self.estimated, reasoning_tokens=self.reasoning_tokens)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.estimated or other.estimated,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


def usage_of(payload: Mapping[str, Any]) -> Usage | None:
    """The ``usage`` of an OpenAI-shaped completion or stream chunk, if it has a usable one.

    Every answer reaches us in OpenAI's shape (from OpenAI-compatible servers as sent, from
    litellm as it normalises each provider), so this is the one reader, by OpenAI's counting
    rule: ``prompt_tokens`` includes cached tokens, ``prompt_tokens_details.cached_tokens`` are
    the cache reads (OpenAI, vLLM, llama.cpp), ``completion_tokens`` includes
    ``completion_tokens_details.reasoning_tokens``. Cache writes are Anthropic's: its API counts
    ``input_tokens`` *without* ``cache_read_input_tokens`` and ``cache_creation_input_tokens``, and
    litellm adds both back into ``prompt_tokens`` and reports the writes as
    ``cache_creation_input_tokens`` (split by TTL in ``cache_creation`` /
    ``prompt_tokens_details.cache_creation_token_details``). Reads and writes are clamped to the
    prompt, so a malformed report can never price below zero.
    """
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    try:
        prompt = max(0, int(usage.get("prompt_tokens") or 0))
        completion = max(0, int(usage.get("completion_tokens") or 0))
        if _PLAIN.isdisjoint(usage):  # most answers of most servers: nothing cached, no reasoning
            return Usage(prompt, completion)
        details = _dict(usage.get("prompt_tokens_details"))
        read = _count(details.get("cached_tokens"), usage.get("cache_read_input_tokens"))  # the same, twice
        write = _count(details.get("cache_creation_tokens"), usage.get("cache_creation_input_tokens"))
        by_ttl = _dict(details.get("cache_creation_token_details")) or _dict(usage.get("cache_creation"))
        hour = _count(by_ttl.get("ephemeral_1h_input_tokens"))
        reasoning = _count(_dict(usage.get("completion_tokens_details")).get("reasoning_tokens"))
    except (TypeError, ValueError):
        return None
    read = min(read, prompt)
    write = min(write, prompt - read)
    return Usage(prompt, completion, False, read, write, min(hour, write), min(reasoning, completion))


_PLAIN = frozenset(
    {
        "prompt_tokens_details",
        "completion_tokens_details",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
    }
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(*values: Any) -> int:
    """The largest count given (0 if none): litellm reports some kinds in two places."""
    best = 0
    for v in values:
        if v is not None and int(v) > best:
            best = int(v)
    return best


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
