"""What the pipeline hands to the quality sampler, once the client has its answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.dispatch import PlanStep
from gateway.pipeline.call import Call
from gateway.policy.loader import LoadedPolicy
from gateway.usage import Usage

__all__ = ["Sample", "Sampler"]


@dataclass
class Sample:
    """A served request worth judging: what was asked and what the client got."""

    call: Call
    body: dict[str, Any]
    served: PlanStep
    answer: str
    usage: Usage
    cost: float


class Sampler(Protocol):
    def wants(self, loaded: LoadedPolicy) -> bool:
        """Whether to sample this request (a coin flip at the policy's rate): O(1)."""
        ...

    def offer(self, sample: Sample) -> None:
        """Queue the sample, or skip it when the queue is full: never waits."""
        ...
