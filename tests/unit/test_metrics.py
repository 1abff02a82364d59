"""The event loop's lag, observed on an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from gateway.metrics import Metrics


def test_each_timer_is_observed_by_how_late_it_fired() -> None:
    metrics = Metrics(lambda: 0, lambda: 0)
    clock = [100.0]
    lateness = iter([0.0, 0.003, 0.3])

    async def sleep(seconds: float) -> None:
        late = next(lateness, None)
        if late is None:
            raise asyncio.CancelledError
        clock[0] += seconds + late

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(metrics.watch_loop(0.1, sleep=sleep, now=lambda: clock[0]))
    text = metrics.exposition().decode()
    assert 'tierwise_event_loop_lag_seconds_bucket{le="0.001"} 1.0' in text
    assert 'tierwise_event_loop_lag_seconds_bucket{le="0.005"} 2.0' in text
    assert 'tierwise_event_loop_lag_seconds_bucket{le="0.25"} 2.0' in text
    assert 'tierwise_event_loop_lag_seconds_bucket{le="0.5"} 3.0' in text
    assert "tierwise_event_loop_lag_seconds_count 3.0" in text
