"""The policy the gateway runs, as it recorded it in the database (at start and on every
reload): never a file the dashboard happens to find, which may not be the one in force."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from gateway.policy.loader import PolicyError, parse_policy
from gateway.policy.models import Policy
from gateway.policy.pricing import litellm_price_map
from gateway.quality.models import PolicySnapshot
from gateway.quality.snapshots import latest_snapshot

__all__ = ["RunningPolicy", "policy_section", "running_policy"]


@dataclass(frozen=True)
class RunningPolicy:
    snapshot: PolicySnapshot
    policy: Policy | None  # None: the recorded text no longer validates (a newer schema)

    @property
    def tiers(self) -> list[str] | None:
        return [t.name for t in self.policy.tiers] if self.policy else None


def running_policy(engine: Engine) -> RunningPolicy | None:
    snapshot = latest_snapshot(engine)
    if snapshot is None:
        return None
    try:
        policy: Policy | None = parse_policy(snapshot.content)
    except PolicyError:  # recorded by a gateway whose policy schema this one does not know
        policy = None
    return RunningPolicy(snapshot, policy)


def _deployments(policy: Policy) -> list[dict[str, Any]]:
    prices = litellm_price_map()
    listed = [(t.name, d) for t in policy.tiers for d in t.deployments]
    judge = policy.quality.judge
    if judge is not None and not isinstance(judge, str):
        listed.append(("(judge)", judge))
    out = []
    for tier, dep in listed:
        price = prices.price_for(dep)
        out.append(
            {
                "tier": tier,
                "deployment": dep.name,
                "model": dep.model,
                "$ in / 1M": price.input_per_1m if price else None,
                "$ out / 1M": price.output_per_1m if price else None,
                "price from": "policy" if dep.price is not None else "litellm price map" if price else "unknown",
                "key from": dep.api_key_env or "–",
            }
        )
    return out


def _changed_since(path: Path, sha256: str) -> bool:
    """Whether the recorded file, where this machine can read it, no longer holds that policy."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() != sha256
    except OSError:
        return False  # not here (another host, a container): nothing to compare


def policy_section(running: RunningPolicy | None) -> None:
    with st.expander("Current policy, as the gateway runs it", expanded=False):
        if running is None:
            st.caption(
                "No policy recorded in this database yet: the gateway records the policy it runs when it "
                "starts and on every reload."
            )
            return
        snap = running.snapshot
        st.markdown(f"`{snap.path}` · sha256 `{snap.sha256[:12]}` · recorded {snap.created_at:%Y-%m-%d %H:%M:%S} UTC")
        if _changed_since(Path(snap.path), snap.sha256):
            st.caption(
                "The file at this path has changed since: the gateway keeps running the last policy that "
                "validated, shown here."
            )
        policy = running.policy
        if policy is None:
            st.code(snap.content, language="yaml")
            return
        table, text = st.tabs(["Tiers and routes", "Policy file"])
        with table:
            df = pd.DataFrame(_deployments(policy)).astype({"$ in / 1M": "float64", "$ out / 1M": "float64"})
            st.dataframe(df, width="stretch", hide_index=True)
            st.write(
                "Routes:",
                ", ".join(f"`{r.name}` → {'router' if r.auto else 'tier ' + str(r.tier)}" for r in policy.routes),
            )
            q = policy.quality
            sampling = f"{q.sample_rate:.0%} of requests, judge `{q.judge_name}`" if q.sample_rate > 0 else "off"
            st.write(f"Quality sampling: {sampling}; at most ${q.max_daily_usd:g} a day.")
            st.write("Router:", policy.router.model_dump() if policy.router else "disabled")
        with text:
            st.code(snap.content, language="yaml")
