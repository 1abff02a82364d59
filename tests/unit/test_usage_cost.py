"""Token kinds read from every usage shape, and the one cost function that prices them."""

from __future__ import annotations

import pytest

from gateway.policy.models import Price
from gateway.policy.pricing import cost_usd, litellm_price_map
from gateway.usage import Usage, prompt_tokens_bound, usage_of


def test_openai_counts_cached_tokens_inside_prompt_tokens() -> None:
    usage = usage_of(
        {
            "usage": {
                "prompt_tokens": 10_000,
                "completion_tokens": 100,
                "prompt_tokens_details": {"cached_tokens": 8_000},
                "completion_tokens_details": {"reasoning_tokens": 60},
            }
        }
    )
    assert usage == Usage(10_000, 100, cache_read_tokens=8_000, reasoning_tokens=60)
    assert usage.uncached_prompt_tokens == 2_000


def test_litellms_anthropic_usage_adds_reads_and_writes_back_into_prompt_tokens() -> None:
    # Anthropic reported input 100, cache read 9,000, cache write 500 (of which 200 for an hour)
    usage = usage_of(
        {
            "usage": {
                "prompt_tokens": 9_600,
                "completion_tokens": 50,
                "prompt_tokens_details": {
                    "cached_tokens": 9_000,
                    "cache_creation_tokens": 500,
                    "cache_creation_token_details": {
                        "ephemeral_5m_input_tokens": 300,
                        "ephemeral_1h_input_tokens": 200,
                    },
                },
                "cache_read_input_tokens": 9_000,
                "cache_creation_input_tokens": 500,
            }
        }
    )
    assert usage == Usage(9_600, 50, cache_read_tokens=9_000, cache_write_tokens=500, cache_write_1h_tokens=200)
    assert usage.uncached_prompt_tokens == 100


@pytest.mark.parametrize(
    "raw",
    [
        {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50}},
        {"prompt_tokens": 10, "completion_tokens": 5, "cache_read_input_tokens": -3},
        {"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 99}},
    ],
)
def test_a_malformed_report_never_prices_below_zero(raw: dict[str, object]) -> None:
    usage = usage_of({"usage": raw})
    assert usage is not None and usage.uncached_prompt_tokens >= 0 and usage.reasoning_tokens <= 5
    assert cost_usd(Price(input_per_1m=1, output_per_1m=1, cached_input_per_1m=0.1), usage) >= 0


def test_the_issues_bills_to_the_provider_formula() -> None:
    prices = litellm_price_map()
    sonnet, haiku, mini = (prices.lookup(m) for m in ("claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o-mini"))
    assert sonnet and haiku and mini
    coding_turn = Usage(100 + 9_000 + 500, 50, cache_read_tokens=9_000, cache_write_tokens=500)
    assert cost_usd(sonnet, coding_turn) == pytest.approx(0.005625, abs=1e-12)
    haiku_turn = Usage(1_000 + 8_000 + 1_000, 100, cache_read_tokens=8_000, cache_write_tokens=1_000)
    assert cost_usd(haiku, haiku_turn) == pytest.approx(0.00355, abs=1e-12)
    assert cost_usd(mini, Usage(10_000, 100, cache_read_tokens=8_000)) == pytest.approx(0.00096, abs=1e-12)
    hour = Usage(1_000, 0, cache_write_tokens=1_000, cache_write_1h_tokens=1_000)
    assert cost_usd(haiku, hour) == pytest.approx(1_000 * 2e-6, abs=1e-12)  # 2x input for an hour


def test_an_unknown_cache_price_is_the_full_input_price() -> None:
    price = Price(input_per_1m=2.0, output_per_1m=8.0)
    assert price.caching_unpriced
    assert cost_usd(price, Usage(1_000, 0, cache_read_tokens=900)) == pytest.approx(cost_usd(price, Usage(1_000, 0)))


def test_a_budget_reserves_the_uncached_worst_case_and_the_dearest_cache_write() -> None:
    from gateway.dispatch import Plan, PlanStep
    from gateway.pipeline.budget import worst_case_usd
    from gateway.policy.models import Deployment
    from gateway.providers.anthropic_fields import MARKER

    haiku = litellm_price_map().lookup("claude-haiku-4-5")
    assert haiku is not None
    step = PlanStep("frontier", Deployment(name="c", model="anthropic/claude-haiku-4-5"), haiku, 100)
    body = {"messages": [{"role": "user", "content": "x" * 4_000}], "max_tokens": 100}
    marked_body = {**body, MARKER: ["cache_control"]}
    plain = worst_case_usd(body, Plan([step], "frontier"))
    marked = worst_case_usd(marked_body, Plan([step], "frontier"))
    assert plain == pytest.approx(prompt_tokens_bound(body) * 1e-6 + 100 * 5e-6)
    assert marked == pytest.approx(prompt_tokens_bound(marked_body) * 2e-6 + 100 * 5e-6)  # all written for an hour
