"""Answer confidence from token logprobs: OpenAI-shaped payloads by hand, then the real local model."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest

from gateway.quality.confidence import LOGPROB_FLOOR, Confidence, StreamConfidence, confidence_of


def entry(token: str, logprob: Any) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": None, "top_logprobs": [{"token": token, "logprob": logprob}]}


def test_confidence_of_an_openai_logprobs_content_list() -> None:
    content = [entry("The", -0.5), entry(" answer", -0.1), entry(" is", -2.0), entry(" 12", -3.0), entry(".", -0.4)]
    c = confidence_of(content)
    assert c == Confidence(
        mean_logprob=pytest.approx(-1.2), min_logprob=-3.0, lowest_k_mean=pytest.approx(-5.5 / 3), tokens=5
    )


def test_fewer_tokens_than_k_average_all_of_them() -> None:
    c = confidence_of([entry("Paris", -0.25)])
    assert c is not None and c.mean_logprob == c.min_logprob == c.lowest_k_mean == -0.25 and c.tokens == 1


@pytest.mark.parametrize("content", [None, [], "not a list", [{"token": "x"}], [{"logprob": None}], [7, None]])
def test_nothing_to_judge_gives_none(content: Any) -> None:
    assert confidence_of(content) is None


def test_malformed_and_non_finite_entries() -> None:
    content = [
        entry("a", -1.0),
        entry("b", None),  # missing value: skipped
        entry("c", math.nan),  # skipped
        entry("d", math.inf),  # not a log-probability: skipped
        entry("e", True),  # a bool is not a number here
        entry("f", "-0.5"),  # nor is a string
        {"token": "g"},
        "h",
        entry("i", -math.inf),  # impossible token: the least confident there is, clamped to the floor
        entry("j", 1e-7),  # rounding above zero
    ]
    c = confidence_of(content)  # type: ignore[arg-type]
    assert c is not None and c.tokens == 3
    assert c.min_logprob == LOGPROB_FLOOR and c.mean_logprob == pytest.approx((-1.0 + LOGPROB_FLOOR) / 3)


def chunk(*entries: dict[str, Any], index: int = 0, text: str = "x") -> dict[str, Any]:
    lp = {"content": list(entries), "refusal": None}
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": {"content": text}, "logprobs": lp}],
    }


def test_stream_chunks_add_up_to_the_same_confidence() -> None:
    tokens = [entry("4", -0.2), entry(" +", -1.5), entry(" 5", -0.1), entry(" =", -0.05), entry(" 9", -2.5)]
    acc = StreamConfidence()
    acc.feed({"choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}]})
    for e in tokens:
        acc.feed(chunk(e))
        acc.feed(chunk(entry("other", -9.0), index=1))  # another choice (n > 1) is not ours
    acc.feed({"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
    acc.feed({"choices": [], "usage": {"completion_tokens": 5}})  # usage chunk
    assert acc.tokens == 5 and acc.confidence() == confidence_of(tokens)


def test_stream_judged_from_its_first_k_tokens() -> None:
    acc = StreamConfidence(first_k=2)
    assert acc.confidence() is None and not acc.full
    acc.feed(chunk(entry("a", -0.1), entry("b", -0.3), entry("c", -5.0)))  # a chunk may carry several tokens
    acc.feed(chunk(entry("d", -7.0)))
    assert acc.full and acc.tokens == 2
    c = acc.confidence()
    assert c is not None and c.min_logprob == -0.3 and c.mean_logprob == pytest.approx(-0.2)


# ---- the real local tier: llama-cpp-python's server ---------------------------------------------


@pytest.fixture(scope="module")
def smollm2_chat(smollm2: str) -> str:
    return smollm2 + "/chat/completions"


@pytest.mark.local_model
def test_local_model_logprobs_parse_plain_stream_and_json_mode(smollm2_chat: str) -> None:
    # top_logprobs must be sent: llama-cpp-python ignores `logprobs: true` without it.
    ask = {
        "model": "x",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 12,
        "logprobs": True,
        "top_logprobs": 0,
    }
    with httpx.Client(timeout=120) as http:
        reply = http.post(smollm2_chat, json=ask).json()
        plain = confidence_of(reply["choices"][0]["logprobs"]["content"])
        assert plain is not None and 0 < plain.tokens <= reply["usage"]["completion_tokens"]
        assert plain.min_logprob <= plain.lowest_k_mean <= plain.mean_logprob < 0

        acc = StreamConfidence()
        with http.stream("POST", smollm2_chat, json=ask | {"stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    acc.feed(json.loads(line.removeprefix("data: ")))
        streamed = acc.confidence()
        assert streamed is not None and streamed.tokens == plain.tokens  # greedy: the same answer

        as_json = http.post(smollm2_chat, json=ask | {"response_format": {"type": "json_object"}}).json()
        assert confidence_of(as_json["choices"][0]["logprobs"]["content"]) is not None
