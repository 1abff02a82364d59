"""Quality signals the gateway records beside the ledger: feedback from clients, and judged
samples (a shadow answer from another tier, compared with the served one by a judge)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = ["Feedback", "Judgement", "PolicySnapshot"]


def _now() -> datetime:
    return datetime.now(UTC)


class Feedback(SQLModel, table=True):
    """A client's verdict on one answer; one per request and source (the key, or ``master``)."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("request_id", "source", name="uq_feedback_request_source"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, max_length=64)
    source: str = Field(max_length=64)
    score: float  # 0..1; thumbs up = 1, down = 0
    comment: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=_now, index=True)
    updated_at: datetime = Field(default_factory=_now)


class Judgement(SQLModel, table=True):
    """One sampled request: the cheaper of two tiers' answers judged against the dearer one's.

    ``adequacy`` is the share of the two judge games (both answer orders) the cheaper answer was
    not beaten in: 1, 0.5 or 0; None when the judge's verdicts could not be read. What the router
    learns from is stored, not the prompt: the encoder's embedding of it (float16, tagged with the
    encoder and the artifact that served) and its length. Text only under ``store_text``.
    """

    __tablename__ = "judgements"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, unique=True, max_length=64)
    created_at: datetime = Field(default_factory=_now, index=True)
    served_tier: str = Field(max_length=64)
    shadow_tier: str = Field(max_length=64)
    cheaper_tier: str = Field(index=True, max_length=64)
    reference_tier: str = Field(max_length=64)
    verdict: str = Field(max_length=16)  # win | tie | loss | unparseable (for the cheaper tier)
    adequacy: float | None = None
    verdicts: str | None = None  # JSON: the judge's two raw verdicts, cheaper answer first as A, then as B
    judge: str = Field(max_length=128)
    sample_rate: float = 1.0  # to weigh the sample back up to the traffic it stands for
    router_version: str | None = Field(default=None, max_length=128)
    router_tier: str | None = Field(default=None, max_length=64)
    predicted: str | None = None  # JSON: the router's predicted quality per tier when it was served
    encoder: str | None = Field(default=None, max_length=64)
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary))  # float16
    prompt_chars: int = 0
    prompt_tokens: int = 0
    served_tokens: int = 0
    shadow_tokens: int = 0
    served_cost_usd: float = 0.0
    shadow_cost_usd: float = 0.0
    prompt_text: str | None = None
    served_text: str | None = None
    shadow_text: str | None = None


class PolicySnapshot(SQLModel, table=True):
    """The policy a gateway ran, recorded at start and on every reload (the dashboard shows it)."""

    __tablename__ = "policy_snapshots"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=_now, index=True)
    path: str = Field(max_length=1024)
    sha256: str = Field(max_length=64)
    content: str
