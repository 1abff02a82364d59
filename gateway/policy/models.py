"""The policy file's schema: one pydantic tree, unknown keys rejected, frozen once loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CalibrationTarget",
    "Deployment",
    "DispatchConfig",
    "EscalateConfig",
    "Embeddings",
    "Limits",
    "Policy",
    "Price",
    "QualityConfig",
    "Route",
    "RouterConfig",
    "SessionConfig",
    "Tier",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """USD per one million tokens. Unset cache prices bill those tokens at ``input_per_1m``
    (never below what the provider may charge; ``tierwise policy check`` says which are unset)."""

    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)
    cached_input_per_1m: float | None = Field(default=None, ge=0)  # cache reads
    cache_write_per_1m: float | None = Field(default=None, ge=0)  # cache writes (Anthropic's 5-minute)
    cache_write_1h_per_1m: float | None = Field(default=None, ge=0)  # Anthropic's 1-hour writes

    @property
    def caching_unpriced(self) -> bool:
        """No price for cache reads. (Writes are billed only by providers that report them, and
        litellm's map prices them for those: OpenAI's caching has no write charge.)"""
        return self.cached_input_per_1m is None


class Deployment(_Strict):
    name: str = Field(pattern=_NAME)
    # A litellm model string. ``openai/<m>`` with an ``api_base`` is any OpenAI-compatible
    # server (llama.cpp, vLLM, Ollama) and takes the byte-passthrough fast path;
    # ``fake/<behaviour>`` is the built-in fake provider; anything else goes through litellm.
    model: str = Field(min_length=1)
    api_base: str | None = None
    # The *name* of the environment variable holding the key, never the key itself.
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    price: Price | None = None
    # Output tokens asked for when the client sets no limit (a small model left unbounded can
    # ramble for thousands of tokens), and the most this deployment may be asked for at all.
    default_max_tokens: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    # How the server takes a JSON Schema for its answer: OpenAI's ``json_schema`` response format,
    # or llama-cpp-python's ``json_object`` with a ``schema`` (turned into a grammar: the answer
    # cannot break it), which its server needs (it answers a ``json_schema`` with a 500).
    structured_outputs: Literal["json_schema", "json_object_schema"] = "json_schema"

    @property
    def provider(self) -> Literal["fake", "openai_compatible", "litellm"]:
        if self.model.startswith("fake/"):
            return "fake"
        if self.model.startswith("openai/") or (self.api_base is not None and "/" not in self.model):
            return "openai_compatible"
        return "litellm"

    @property
    def upstream_model(self) -> str:
        """The model name the upstream server expects."""
        if self.provider in ("fake", "openai_compatible") and "/" in self.model:
            return self.model.split("/", 1)[1]
        return self.model


class Tier(_Strict):
    name: str = Field(pattern=_NAME)
    deployments: list[Deployment] = Field(min_length=1)
    description: str = ""


Escalation = Literal[
    "invalid_json",
    "schema_mismatch",
    "tool_args_invalid",
    "tool_not_called",
    "truncated",
    "empty",
    "refusal",
    "low_confidence",
]


class EscalateConfig(_Strict):
    """Ask the next tier up, before the client sees it, when an answer fails one of these checks
    (the same checks the quality signals record). Off unless ``on`` names some."""

    on: list[Escalation] = Field(default_factory=list)
    # Tiers asked after the first, at most; every answer is paid for, and budgets reserve for all.
    max_steps: int = Field(default=1, ge=1, le=3)
    # ``low_confidence``: the mean of the three least likely tokens' log-probabilities below this.
    # Measured on the bundled 135M model it adds little over length and truncation (bench/README.md),
    # and asking llama.cpp for log-probabilities slows it down: no default.
    min_confidence: float | None = Field(default=None, le=0)
    # Streams: ``after`` checks once the stream is done (quality signals only); ``buffer`` holds it
    # until the check can run — the whole answer, or its first ``buffer_tokens`` tokens when only
    # refusal and low_confidence are asked for — and escalates before the client sees anything.
    stream: Literal["after", "buffer"] = "after"
    buffer_tokens: int = Field(default=32, ge=4, le=4096)

    @model_validator(mode="after")
    def _confidence_needs_a_threshold(self) -> EscalateConfig:
        if "low_confidence" in self.on and self.min_confidence is None:
            raise ValueError("escalate.on has low_confidence: set escalate.min_confidence")
        return self


class Route(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    # ``auto`` asks the router; ``tier`` pins the route (and is the fallback for ``auto``
    # when the router is disabled or not loaded).
    auto: bool = False
    tier: str | None = None
    description: str = ""
    # Overrides the policy's ``escalate`` for this route.
    escalate: EscalateConfig | None = None

    @model_validator(mode="after")
    def _auto_or_pinned(self) -> Route:
        if not self.auto and self.tier is None:
            raise ValueError("a route must set `auto: true` or name a `tier`")
        return self


class CalibrationTarget(_Strict):
    """The policy owner's target in their own terms; exactly one is set."""

    frontier_share: float | None = Field(default=None, ge=0, le=1)
    quality: float | None = Field(default=None, gt=0, le=1.5)
    max_cost_per_1k_usd: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> CalibrationTarget:
        given = [v for v in (self.frontier_share, self.quality, self.max_cost_per_1k_usd) if v is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of frontier_share, quality, max_cost_per_1k_usd")
        return self


class RouterConfig(_Strict):
    enabled: bool = True
    # A shipped artifact by name (``default``: static encoder distilled from MiniLM, sub-millisecond
    # decisions; ``minilm``: MiniLM itself through ONNX Runtime, ~6 ms; ``two-stage``: the static one
    # when its choice is clear, else MiniLM) or a directory path, relative to the policy file.
    artifact: str = "default"
    # Map each policy tier to the artifact tier whose estimator stands for it.
    tier_map: dict[str, str] = Field(default_factory=dict)
    target: CalibrationTarget | None = None
    # Written by ``tierwise router calibrate``: the cost penalty of the decision rule.
    cost_weight: float | None = Field(default=None, ge=0)
    # Weigh tiers by this policy's prices (each tier's first deployment) rather than the prices
    # of the models the router was trained on. Off: the training data's price ratios decide.
    price_aware: bool = True
    # The part of a long prompt that decides: its last N characters (questions come last).
    max_chars: int = Field(default=2000, ge=64)
    cache_size: int = Field(default=4096, ge=0)


class DispatchConfig(_Strict):
    # On a tier's exhaustion, try the next tier up.
    fallback_up: bool = True
    cooldown_s: float = Field(default=30.0, ge=0)
    backoff_base_s: float = Field(default=0.1, ge=0)
    backoff_max_s: float = Field(default=2.0, ge=0)
    # A Retry-After longer than this moves on to the next deployment instead of waiting.
    max_retry_after_s: float = Field(default=5.0, ge=0)
    # A deployment is cooled down after failing this many different requests in a row (one
    # request that fails everywhere says nothing about the deployment).
    failures_before_cooldown: int = Field(default=3, ge=1)
    # The longest a stream may run, start to end; then it is ended with an error event.
    max_stream_s: float = Field(default=600.0, gt=0)


class Limits(_Strict):
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    # A request field that is not part of OpenAI's chat-completions API: refused (400
    # unsupported_parameter) or dropped and logged. Either way it never reaches a provider.
    unknown_fields: Literal["reject", "drop"] = "reject"
    # When the budget/rate-limit store (Redis) is unreachable: refuse requests, or let them through.
    on_limiter_error: Literal["closed", "open"] = "closed"
    # Worst case reserved against a budget when a request sets no max_tokens.
    budget_default_max_tokens: int = Field(default=4096, ge=1)
    # Near the end of its budget, a key's requests are steered to a cheaper tier: when less than
    # this share of its daily or monthly budget is left, use ``budget_steer_tier`` (default: cheapest).
    budget_steer_below: float | None = Field(default=None, gt=0, lt=1)
    budget_steer_tier: str | None = None


class QualityConfig(_Strict):
    """Judged samples of live traffic: after the client has its answer, another tier answers the
    same request and a judge compares the two (both orders). Never charged to the caller's key."""

    sample_rate: float = Field(default=0.0, ge=0, le=1)
    # A deployment of the tiers by name, or one defined here (a judge need not serve traffic).
    judge: str | Deployment | None = None
    # Shadow and judge calls stop for the day (UTC) once they have cost this much.
    max_daily_usd: float = Field(default=5.0, ge=0)
    # Keep the prompt and both answers with each judgement (off: only the router's features).
    store_text: bool = False
    # Sampled requests waiting for their shadow call; beyond it samples are skipped, never queued.
    queue_size: int = Field(default=100, ge=1, le=10_000)
    # Samples judged at once (a shadow call and two judge calls each, in turn).
    concurrency: int = Field(default=8, ge=1, le=256)

    @property
    def judge_name(self) -> str | None:
        return self.judge.name if isinstance(self.judge, Deployment) else self.judge


class Embeddings(_Strict):
    """Embedding models, pinned rather than routed: vectors from different models do not mix, so
    a request is served by the deployment it names (or ``default``) and never falls back."""

    # Same fields as a tier's deployment; OpenAI-compatible servers (``openai/<model>``) or the
    # fake (``fake/<behaviour>``). ``price`` is required: ``output_per_1m`` is not used.
    deployments: list[Deployment] = Field(min_length=1)
    # Serves requests whose ``model`` names no deployment here (apps often hard-code a model name).
    default: str | None = None

    @model_validator(mode="after")
    def _servable(self) -> Embeddings:
        names = [d.name for d in self.deployments]
        _unique(names, "embeddings deployment")
        for dep in self.deployments:
            if dep.provider == "litellm":
                raise ValueError(
                    f"embeddings deployment {dep.name!r}: only OpenAI-compatible servers are supported "
                    "(model `openai/<name>` with an api_base, or `fake/<name>`)"
                )
            if dep.price is None:
                raise ValueError(f"embeddings deployment {dep.name!r} needs a price (input_per_1m; output_per_1m: 0)")
        if self.default is not None and self.default not in names:
            raise ValueError(f"embeddings.default names unknown deployment {self.default!r} (deployments: {names})")
        return self

    def deployment(self, model: str) -> Deployment | None:
        """The deployment a request's ``model`` names: by name, else by upstream model, else the default."""
        for dep in self.deployments:
            if dep.name == model:
                return dep
        for dep in self.deployments:
            if dep.upstream_model == model:
                return dep
        return next((d for d in self.deployments if d.name == self.default), None)


class SessionConfig(_Strict):
    """Per-conversation routing for ``auto`` routes: a conversation (``x-tierwise-session``, else
    its system prompt and first user turn) keeps its first turn's tier and moves up when the
    router asks for more or an answer escalates.

    ``move_down``: ``never`` (quality first: the router reads only the last turn, and a short
    follow-up in a hard conversation reads as easy), or ``when_cheaper``: down to the router's
    tier when this turn costs less there than on the kept tier, each with what its prompt cache
    holds of the conversation (``gateway.routing.moves``)."""

    enabled: bool = True
    # Since the conversation's last turn; every turn renews it.
    ttl_s: float = Field(default=1800, gt=0, le=7 * 86_400)
    move_down: Literal["never", "when_cheaper"] = "never"
    # How long a provider keeps a prompt cached after its last use (Anthropic's default and
    # OpenAI's usual: 5 minutes), for ``when_cheaper``.
    cache_ttl_s: float = Field(default=300, gt=0, le=86_400)
    # The turns a move down is weighed over: this one (which may write the history to a cold
    # cache) and those after it (each cheaper on the lower tier).
    horizon_turns: int = Field(default=4, ge=1, le=100)


class CachingConfig(_Strict):
    """Prompt caching for clients that do not ask for it. ``anthropic_breakpoints: auto``: a
    request to an Anthropic deployment that carries no ``cache_control`` gets breakpoints where
    Anthropic's prompt-caching guide puts them: the last tool, the end of the system prompt and the
    latest turn (which moves forward each turn, so each turn reads what the last one wrote)."""

    anthropic_breakpoints: Literal["off", "auto"] = "off"


class Policy(_Strict):
    version: Literal[1] = 1
    tiers: list[Tier] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    router: RouterConfig | None = None
    dispatch: DispatchConfig = DispatchConfig()
    limits: Limits = Limits()
    quality: QualityConfig = QualityConfig()
    # Escalation for every route (and tier/... names) that does not set its own.
    escalate: EscalateConfig = EscalateConfig()
    sessions: SessionConfig = SessionConfig()
    caching: CachingConfig = CachingConfig()
    embeddings: Embeddings | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        tier_names = [t.name for t in self.tiers]
        _unique(tier_names, "tier")
        embedding_names = [d.name for d in self.embeddings.deployments] if self.embeddings else []
        _unique([d.name for t in self.tiers for d in t.deployments] + embedding_names, "deployment")
        _unique([r.name for r in self.routes], "route")
        for route in self.routes:
            if route.tier is not None and route.tier not in tier_names:
                raise ValueError(f"route {route.name!r} names unknown tier {route.tier!r} (tiers: {tier_names})")
            if route.auto and self.router is None and route.tier is None:
                raise ValueError(f"route {route.name!r} is auto but the policy has no `router` section and no `tier`")
        if self.limits.budget_steer_tier is not None and self.limits.budget_steer_tier not in tier_names:
            raise ValueError(f"limits.budget_steer_tier names unknown tier {self.limits.budget_steer_tier!r}")
        if self.router is not None:
            for ours in self.router.tier_map:
                if ours not in tier_names:
                    raise ValueError(f"router.tier_map names unknown tier {ours!r}")
        judge = self.quality.judge
        if isinstance(judge, str) and self.deployment(judge) is None:
            raise ValueError(f"quality.judge names unknown deployment {judge!r}")
        if isinstance(judge, Deployment) and self.deployment(judge.name) is not None:
            raise ValueError(f"quality.judge {judge.name!r} has the name of a tier's deployment")
        if self.quality.sample_rate > 0 and judge is None:
            raise ValueError("quality.sample_rate needs a quality.judge")
        return self

    # Lookups used on the hot path are cheap: tiers are few.
    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def tier_index(self, name: str) -> int:
        return [t.name for t in self.tiers].index(name)

    def route(self, name: str) -> Route | None:
        for route in self.routes:
            if route.name == name:
                return route
        return None

    @property
    def all_deployments(self) -> list[Deployment]:
        """The tiers' deployments, a judge defined on its own, and the embedding models."""
        found = [d for t in self.tiers for d in t.deployments]
        if isinstance(self.quality.judge, Deployment):
            found.append(self.quality.judge)
        return found + (self.embeddings.deployments if self.embeddings else [])

    @property
    def judge(self) -> Deployment | None:
        """The judge's deployment, wherever the policy defines it."""
        judge = self.quality.judge
        if isinstance(judge, Deployment) or judge is None:
            return judge
        found = self.deployment(judge)
        return found[1] if found else None

    def deployment(self, name: str) -> tuple[Tier, Deployment] | None:
        for tier in self.tiers:
            for dep in tier.deployments:
                if dep.name == name:
                    return tier, dep
        return None

    @property
    def frontier(self) -> Tier:
        return self.tiers[-1]


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} name {name!r}")
        seen.add(name)
