"""Confidence of an answer from its token log-probabilities.

Parses OpenAI's ``choices[i].logprobs.content`` (a list of ``{token, logprob, bytes, top_logprobs}``),
as OpenAI and llama-cpp-python's server return it when asked with ``logprobs: true, top_logprobs: N``
(llama-cpp-python returns nothing unless ``top_logprobs`` is set, even to 0). Streams carry the same
entries spread over the chunks' ``choices[i].logprobs.content``; :class:`StreamConfidence` collects them.

Which statistic means anything is measured by bench/confidence.py (bench/README.md, "Confidence"):
on SmolLM2-135M the mean of the three least likely tokens separated right from wrong answers best
(ROC AUC 0.83), but hardly better than answer length and truncation, which cost nothing.

Pure: no HTTP, no gateway state. Malformed entries are skipped rather than failing a request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LOGPROB_FLOOR", "Confidence", "StreamConfidence", "confidence_of", "token_logprobs"]

# A token the server calls impossible (-inf) is the least confident token there is; clamp it
# to a finite floor so means stay finite.
LOGPROB_FLOOR = -100.0
LOWEST_K = 3


@dataclass(frozen=True)
class Confidence:
    mean_logprob: float  # mean over the answer's tokens
    min_logprob: float  # the single least likely token
    lowest_k_mean: float  # mean of the LOWEST_K least likely tokens (all of them if fewer)
    tokens: int


def _logprob(entry: object) -> float | None:
    if not isinstance(entry, Mapping):
        return None
    value = entry.get("logprob")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value) or value == math.inf:
        return None
    return min(max(float(value), LOGPROB_FLOOR), 0.0)


def token_logprobs(content: Sequence[Mapping[str, Any]] | None) -> list[float]:
    """The usable per-token logprobs of one ``logprobs.content`` list, in order."""
    if not isinstance(content, Sequence) or isinstance(content, str | bytes):
        return []
    return [v for v in map(_logprob, content) if v is not None]


def _summarise(values: Sequence[float]) -> Confidence | None:
    if not values:
        return None
    lowest = sorted(values)[:LOWEST_K]
    return Confidence(
        mean_logprob=sum(values) / len(values),
        min_logprob=lowest[0],
        lowest_k_mean=sum(lowest) / len(lowest),
        tokens=len(values),
    )


def confidence_of(logprobs_content: Sequence[Mapping[str, Any]] | None) -> Confidence | None:
    """Confidence of one choice from its ``logprobs.content``; None when there is nothing to judge."""
    return _summarise(token_logprobs(logprobs_content))


class StreamConfidence:
    """Accumulates one choice's token logprobs from parsed ``chat.completion.chunk`` payloads.

    ``first_k`` caps what is kept, for judging a stream from its first tokens while buffering them.
    """

    def __init__(self, choice_index: int = 0, first_k: int | None = None) -> None:
        self.choice_index = choice_index
        self.first_k = first_k
        self._values: list[float] = []

    @property
    def tokens(self) -> int:
        return len(self._values)

    @property
    def full(self) -> bool:
        return self.first_k is not None and len(self._values) >= self.first_k

    def feed(self, chunk: Mapping[str, Any]) -> None:
        choices = chunk.get("choices") if isinstance(chunk, Mapping) else None
        if not isinstance(choices, Sequence):
            return
        for choice in choices:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != self.choice_index:
                continue
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, Mapping):
                self._values.extend(token_logprobs(logprobs.get("content")))
        if self.first_k is not None:
            del self._values[self.first_k :]

    def confidence(self) -> Confidence | None:
        return _summarise(self._values)
