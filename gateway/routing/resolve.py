"""Model name -> where the request goes: a route (auto or pinned), a tier, or one deployment.

auto / <route>     a route from the policy; ``auto`` routes ask the router
tier/<name>        a tier, pinned
<deployment>       one deployment by name, no fallback
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.chat_request import message_text
from gateway.errors import ModelNotFoundError, ServiceUnavailableError
from gateway.policy.loader import LoadedPolicy
from gateway.policy.models import Deployment, Policy, Price
from gateway.policy.pricing import reference_call_cost
from gateway.routing.moves import growth_per_turn, prompt_tokens, shared_prefix, worth_leaving
from gateway.routing.sessions import Kept, Sessions, conversation_id
from router.tiermap import estimators_for

__all__ = ["Decision", "Resolution", "Resolver", "RouterLike", "price_scale", "prompt_text"]

log = logging.getLogger("tierwise.resolve")


class Decision(Protocol):
    @property
    def tier(self) -> str: ...
    @property
    def scores(self) -> dict[str, float]: ...
    @property
    def version(self) -> str: ...


class RouterLike(Protocol):
    """What the gateway needs from ``router.Router``: one decision per prompt."""

    @property
    def version(self) -> str: ...
    @property
    def tiers(self) -> Sequence[str]: ...

    def decide(
        self,
        text: str,
        *,
        length: int | None = None,
        cost_weight: float | None = None,
        allowed: Sequence[str] | None = None,
        cost_scale: Sequence[float] | None = None,
    ) -> Decision: ...

    def cost_scale(self, relative_call_cost: Mapping[str, float | None]) -> list[float]:
        """Factors that re-price the router's tiers to a policy's (see ``router.Router``)."""
        ...

    def decides_inline(self, text: str, length: int | None = None) -> bool:
        """True when deciding is cheap enough for the event loop (cached, or a static encoder)."""
        ...

    def features(self, texts: Sequence[str], *, lengths: Sequence[int | None] | None = None) -> Any:
        """The router's inputs for prompts: the encoder's embedding of each tail, then its length."""
        ...

    @property
    def encoder_name(self) -> str:
        """The encoder the artifact was trained with (stored with every judged sample)."""
        ...


@dataclass
class Resolution:
    route: str | None
    tier: str
    deployment: str | None = None
    fallback: bool = True
    router_tier: str | None = None
    router_scores: dict[str, float] = field(default_factory=dict)
    router_version: str | None = None
    notes: list[str] = field(default_factory=list)
    session: str | None = None  # the conversation an auto route kept this request's tier for
    prompt_tokens: int | None = None  # its estimate, where sessions weigh prompt caches
    shared: tuple[str, int] | None = None  # the system prompt it opens with: a name and its size


def prompt_text(messages: Sequence[dict[str, Any]], max_chars: int) -> tuple[str, int]:
    """The part of a conversation that decides: the last user turn, its tail if long, and
    that turn's whole length (the router's length feature was trained on whole prompts).

    Questions come last (few-shot prompts, pasted documents followed by an ask), so the tail
    of the last user message carries the difficulty; earlier turns mostly carry context.
    """
    text = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = message_text(message.get("content"))
            if text:
                break
    else:
        text = message_text(messages[-1].get("content")) if messages else ""
    return text[-max_chars:], len(text)


class Resolver:
    def __init__(
        self,
        router: RouterLike | None,
        available: Callable[[Policy, str], bool],
        deployment_available: Callable[[str, Policy], bool] = lambda _name, _policy: True,
        sessions: Sessions | None = None,
        has_key: Callable[[str, Policy], bool] = lambda _name, _policy: True,
    ) -> None:
        self.router = router
        self.sessions = sessions
        self._has_key = has_key  # (deployment name, policy) -> its credentials are set
        self._available = available  # (policy, tier name) -> has a usable deployment
        self._deployment_available = deployment_available  # (deployment name, policy) -> usable
        self._scale: tuple[LoadedPolicy, list[float]] | None = None  # for the current snapshot
        self._prices: tuple[LoadedPolicy, dict[str, Price]] | None = None  # each tier's, ditto

    async def resolve(
        self,
        loaded: LoadedPolicy,
        model: str,
        messages: Sequence[dict[str, Any]],
        session: str | None = None,
        owner: str | None = None,
    ) -> Resolution:
        """``session``: the client's name for the conversation (else one is derived from it);
        ``owner``: the key making the request, whose conversations these are."""
        policy = loaded.policy
        route = policy.route(model)
        if route is not None:
            if route.auto and self.router is not None and policy.router is not None and policy.router.enabled:
                res = await self._ask_router(loaded, route.name, messages)
                if self.sessions is not None and policy.sessions.enabled:
                    res.session = session or conversation_id(messages)
                    # Without a name from the client, a request with no earlier answer in it
                    # continues nothing: it starts the conversation its opening names.
                    fresh = session is None and not any(m.get("role") == "assistant" for m in messages)
                    leave: list[str] = []
                    if policy.sessions.move_down == "when_cheaper":
                        res.prompt_tokens, res.shared = prompt_tokens(messages), shared_prefix(messages)
                        if not fresh:
                            leave = await self._worth_leaving(loaded, res, owner, messages)
                    kept = await self.keep(policy, res.session, owner, res.tier, fresh=fresh, leave=leave)
                    if kept.was is not None and kept.was != kept.tier:
                        how = "cheaper than" if kept.was in leave else "leaves"
                        res.notes.append(f"conversation moved {kept.was} -> {kept.tier}: {how} its cache at {kept.was}")
                    res.tier = kept.tier
            elif route.tier is not None:
                res = Resolution(route=route.name, tier=route.tier)
            else:
                raise ServiceUnavailableError(f"route {route.name!r} needs the router, which is not loaded")
        elif model.startswith("tier/"):
            name = model.removeprefix("tier/")
            if name not in [t.name for t in policy.tiers]:
                raise _unknown(policy, model)
            res = Resolution(route=None, tier=name)
        elif (found := policy.deployment(model)) is not None:
            # A server the probe finds down is still tried (it may be back: a refusal is instant);
            # a deployment without its key would only earn an upstream 401 the client cannot fix.
            if not self._has_key(model, policy):
                raise ServiceUnavailableError(
                    f"deployment `{model}` is unavailable: its API key is not set (GET /v1/models says which); "
                    "a route or tier/... falls back to another",
                    code="deployment_unavailable",
                )
            return Resolution(route=None, tier=found[0].name, deployment=model, fallback=False)
        else:
            raise _unknown(policy, model)
        return self._nearest_available(policy, res)

    async def _ask_router(self, loaded: LoadedPolicy, route: str, messages: Sequence[dict[str, Any]]) -> Resolution:
        policy = loaded.policy
        assert self.router is not None and policy.router is not None
        cfg = policy.router
        ours = [t.name for t in policy.tiers]
        to_ours = _artifact_to_policy(ours, list(self.router.tiers), cfg.tier_map)
        scale = self._cost_scale(loaded) if cfg.price_aware else None
        text, length = prompt_text(messages, cfg.max_chars)
        # The router chooses among all tiers so its real choice is recorded; an unavailable choice
        # is then moved to the nearest available tier by the caller, with a note in the ledger.
        allowed = list(to_ours)
        if self.router.decides_inline(text, length):
            # Sub-millisecond: a thread hop would cost more than it saves.
            decision = self.router.decide(
                text, length=length, cost_weight=cfg.cost_weight, allowed=allowed, cost_scale=scale
            )
        else:
            # A transformer encoder takes tens of ms: off the event loop so other requests flow.
            decision = await asyncio.to_thread(
                self.router.decide,
                text,
                length=length,
                cost_weight=cfg.cost_weight,
                allowed=allowed,
                cost_scale=scale,
            )
        tier = to_ours[decision.tier]
        return Resolution(
            route=route,
            tier=tier,
            router_tier=tier,
            router_scores={to_ours.get(k, k): round(v, 4) for k, v in decision.scores.items()},
            router_version=decision.version,
        )

    async def keep(
        self,
        policy: Policy,
        session: str,
        owner: str | None,
        tier: str,
        *,
        fresh: bool = False,
        leave: Sequence[str] = (),
    ) -> Kept:
        """Where the conversation goes on: ``tier``, or the higher one it already has unless that
        is in ``leave`` (``fresh``: it starts here). Without the sessions store (Redis down) the
        turn is routed on its own."""
        assert self.sessions is not None
        order = [t.name for t in policy.tiers]
        ttl = policy.sessions.ttl_s
        try:
            return await self.sessions.keep(owner or "-", session, tier, order, ttl, fresh=fresh, leave=leave)
        except Exception as exc:
            log.warning("conversation tiers unavailable (%s): this turn is routed on its own", type(exc).__name__)
            return Kept(tier)

    async def _worth_leaving(
        self, loaded: LoadedPolicy, res: Resolution, owner: str | None, messages: Sequence[dict[str, Any]]
    ) -> list[str]:
        """The higher tiers the conversation should move down from to the router's tier on this
        turn, given what each tier's prompt cache holds of it."""
        policy = loaded.policy
        order = [t.name for t in policy.tiers]
        assert self.sessions is not None and res.session is not None and res.prompt_tokens is not None
        if res.tier == order[-1]:
            return []
        try:
            warmth = await self.sessions.warmth(owner or "-", res.session, order)
            if res.shared is not None:
                shared = await self.sessions.warmth(owner or "-", res.shared[0], order)
                warmth = {t: max(warmth.get(t, 0), shared.get(t, 0)) for t in {*warmth, *shared}}
        except Exception as exc:
            log.warning("conversation caches unavailable (%s): this turn stays where it is", type(exc).__name__)
            return []
        tokens, horizon, growth = res.prompt_tokens, policy.sessions.horizon_turns, growth_per_turn(messages)
        return worth_leaving(self._tier_prices(loaded), order, res.tier, tokens, warmth, horizon, growth)

    async def warmed(self, policy: Policy, res: Resolution, owner: str | None, tier: str, price: Price) -> None:
        """``tier`` served this turn at ``price``: its provider now caches the conversation so far,
        if it caches at all (a deployment with a cache-read price)."""
        if self.sessions is None or res.session is None or res.prompt_tokens is None:
            return
        if price.cached_input_per_1m is None:
            return
        ttl = policy.sessions.cache_ttl_s
        try:
            await self.sessions.warmed(owner or "-", res.session, tier, res.prompt_tokens, ttl)
            if res.shared is not None:
                await self.sessions.warmed(owner or "-", res.shared[0], tier, res.shared[1], ttl)
        except Exception as exc:
            log.warning("conversation caches unavailable (%s): not recorded", type(exc).__name__)

    def _tier_prices(self, loaded: LoadedPolicy) -> dict[str, Price]:
        """Each tier's price: its first usable deployment's (once per policy snapshot)."""
        if self._prices is None or self._prices[0] is not loaded:
            usable = self._deployment_available
            first = first_deployments(loaded.policy, lambda name: usable(name, loaded.policy))
            self._prices = (loaded, {tier: loaded.price(dep.name) for tier, dep in first.items()})
        return self._prices[1]

    def _cost_scale(self, loaded: LoadedPolicy) -> list[float]:
        if self._scale is None or self._scale[0] is not loaded:  # once per policy snapshot
            assert self.router is not None
            usable = self._deployment_available
            self._scale = (loaded, price_scale(self.router, loaded, lambda name: usable(name, loaded.policy)))
        return self._scale[1]

    def _nearest_available(self, policy: Policy, res: Resolution) -> Resolution:
        if self._available(policy, res.tier):
            return res
        names = [t.name for t in policy.tiers]
        i = names.index(res.tier)
        # Up first (quality is kept), then down.
        for j in [*range(i + 1, len(names)), *range(i - 1, -1, -1)]:
            if self._available(policy, names[j]):
                res.notes.append(f"tier {res.tier} unavailable -> {names[j]}")
                res.tier = names[j]
                return res
        raise ServiceUnavailableError(
            "no tier has an available deployment (GET /readyz says why)", code="no_available_tier"
        )


def price_scale(
    router: RouterLike, loaded: LoadedPolicy, usable: Callable[[str], bool] = lambda _name: True
) -> list[float]:
    """Factors on the router's predicted costs, per artifact tier, that price its tiers as the
    policy does: a reference call on the deployment each tier would try first (its first usable
    one, else its first), relative to the top tier's."""
    policy = loaded.policy
    cfg_map = policy.router.tier_map if policy.router is not None else {}
    to_ours = _artifact_to_policy([t.name for t in policy.tiers], list(router.tiers), cfg_map)
    first = first_deployments(policy, usable)
    call = {name: reference_call_cost(loaded.price(dep.name)) for name, dep in first.items()}
    top_tier = to_ours.get(router.tiers[-1])
    top = call[top_tier] if top_tier is not None else 0.0
    # Without a priced top tier there is nothing to compare against: training prices decide.
    relative = {a: (call[p] / top if top > 0 else None) for a, p in to_ours.items()}
    return router.cost_scale(relative)


def first_deployments(policy: Policy, usable: Callable[[str], bool]) -> dict[str, Deployment]:
    """Each tier's deployment a call would try first: its first usable one, else its first."""
    return {t.name: next((d for d in t.deployments if usable(d.name)), t.deployments[0]) for t in policy.tiers}


def _artifact_to_policy(ours: list[str], theirs: list[str], tier_map: dict[str, str]) -> dict[str, str]:
    """Artifact tier -> the cheapest policy tier its estimator stands for (``router.tiermap``)."""
    out: dict[str, str] = {}
    for policy_tier, artifact_tier in estimators_for(ours, theirs, tier_map).items():
        out.setdefault(artifact_tier, policy_tier)
    return out


def _unknown(policy: Policy, model: str) -> ModelNotFoundError:
    """A 404 that names the routes and tiers to ask for instead (the deployments a key may pin
    are in GET /v1/models, which lists only what that key may use)."""
    names = [r.name for r in policy.routes] + [f"tier/{t.name}" for t in policy.tiers]
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return ModelNotFoundError(
        f"the model `{model}` does not exist; ask for one of {shown} (GET /v1/models lists what your key may use)",
        param="model",
    )
