"""The quality sampler's scheduling: samples judged several at once, up to the policy's bound;
a full queue skips; every outcome is reported."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.dispatch import PlanStep
from gateway.keys.limiter import MemoryLimiter
from gateway.pipeline.call import Call
from gateway.pipeline.sampling import Sample
from gateway.quality.sampler import QualitySampler
from gateway.usage import Usage
from tests.unit.fakes import THREE_TIERS, FakeClock, RecordingLedger, policy


class _HeldSampler(QualitySampler):
    """Judging waits until the test lets it go, so the samples in flight can be counted."""

    def __init__(self, outcomes: list[str], **kwargs: object) -> None:
        super().__init__(outcomes=outcomes.append, **kwargs)  # type: ignore[arg-type]
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def judge(self, sample: Sample) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        if sample.answer == "boom":
            raise RuntimeError("a judge that broke")
        self._outcomes("judged")


async def test_samples_are_judged_concurrently_up_to_the_bound_and_counted(tmp_path: Path) -> None:
    loaded = policy(tmp_path, THREE_TIERS + "quality: {sample_rate: 1, judge: top-a, concurrency: 3, queue_size: 4}\n")
    outcomes: list[str] = []
    # judge() is the test's: the calls it would make need no dispatcher, database or router
    sampler = _HeldSampler(
        outcomes,
        dispatcher=None,
        availability=None,
        ledger=RecordingLedger(),
        limiter=MemoryLimiter(),
        engine=None,
        router=None,
        clock=FakeClock(),
    )
    served = PlanStep.of(loaded, "local", loaded.policy.tiers[0].deployments[0])

    def sample(i: int, answer: str = "ok") -> Sample:
        call = Call(request_id=f"req_{i}", api="chat", loaded=loaded, started=0.0)
        return Sample(call, {"model": "auto", "messages": []}, served, answer, Usage(1, 1), 0.0)

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    task = asyncio.create_task(sampler.run())
    await settle()
    for i in range(3):
        sampler.offer(sample(i, "boom" if i == 0 else "ok"))
    await settle()
    assert sampler.in_flight == 3 and sampler.queued == 0  # judged at once, not one by one
    for i in range(3, 8):  # 4 wait for room, the 5th finds the queue full
        sampler.offer(sample(i))
    await settle()
    assert sampler.in_flight == 3 and sampler.queued == 4
    assert outcomes == ["skipped"]
    sampler.release.set()
    await settle()
    assert sampler.most_in_flight == 3 and sampler.queued == 0
    assert sorted(outcomes) == ["failed", "judged", "judged", "judged", "judged", "judged", "judged", "skipped"]
    task.cancel()
