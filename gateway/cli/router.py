"""``tierwise router ...``: the router's own commands (train, eval, cv) and those that join router
and policy (calibrate)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from router.artifact import resolve_artifact
from router.cli import evaluate_file, load_eval_data, offline
from router.progress import log

__all__ = ["register"]


def _calibrate(args: argparse.Namespace) -> int:
    offline()
    import numpy as np  # noqa: PLC0415

    from router.calibrate import fit_cost_weight, write_cost_weight  # noqa: PLC0415
    from router.core import Router, choose  # noqa: PLC0415
    from router.evaluate import select_tiers  # noqa: PLC0415

    policy_path = Path(args.policy)
    from gateway.policy.loader import load_policy  # noqa: PLC0415

    loaded = load_policy(policy_path)
    cfg = loaded.policy.router
    if cfg is None:
        print(f"{policy_path}: no router section", file=sys.stderr)
        return 1
    target = cfg.target
    if args.frontier_share is not None or args.quality is not None or args.max_cost_per_1k is not None:
        from gateway.policy.models import CalibrationTarget  # noqa: PLC0415

        target = CalibrationTarget(
            frontier_share=args.frontier_share, quality=args.quality, max_cost_per_1k_usd=args.max_cost_per_1k
        )
    if target is None:
        print(
            f"{policy_path}: set router.target (or pass --frontier-share/--quality/--max-cost-per-1k)", file=sys.stderr
        )
        return 1
    data = load_eval_data(args)
    # The policy's artifact is relative to the policy's folder, as the gateway reads it.
    router = Router.load(
        resolve_artifact(args.artifact) if args.artifact else resolve_artifact(cfg.artifact, policy_path.parent)
    )
    cols = select_tiers(router.tiers, data.tiers)
    log(f"calibrating on {len(data.rows)} rows of {args.data}")
    quality, cost = router.score([r.prompt for r in data.rows], progress=True)
    if cfg.price_aware:  # decide as the gateway will: at this policy's prices
        from gateway.routing.resolve import price_scale  # noqa: PLC0415

        cost = cost * np.asarray(price_scale(router, loaded), dtype=np.float32)
    q, c = quality[:, cols], cost[:, cols]
    weight = fit_cost_weight(
        q,
        c,
        data.scores,
        data.costs,
        quality=target.quality,
        frontier_share=target.frontier_share,
        max_cost_per_1k_usd=target.max_cost_per_1k_usd,
    )
    ch = choose(q, c, weight)
    idx = np.arange(len(ch))
    share = float(np.mean(ch == len(cols) - 1))
    rel_q = float(data.scores[idx, ch].mean() / data.scores[:, -1].mean())
    rel_c = float(data.costs[idx, ch].sum() / data.costs[:, -1].sum())
    print(
        f"cost_weight={weight:.6g}: top-tier share {share:.1%}, "
        f"quality {rel_q:.1%} of always-top, cost {rel_c:.1%} of always-top"
    )
    if not args.dry_run:
        write_cost_weight(policy_path, weight)
        print(f"wrote router.cost_weight to {policy_path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from gateway.quality.checks import text_checks  # noqa: PLC0415

    return evaluate_file(args, text_checks if args.cascade else None)


def _adapt_from_ledger(args: argparse.Namespace) -> int:
    """``router adapt --from-ledger``: the policy's own tiers, learned from its judged samples."""
    offline()
    from gateway.cli.ran import ledger_and_policy  # noqa: PLC0415
    from gateway.ledger import NoLedger  # noqa: PLC0415
    from gateway.policy.loader import PolicyError, load_policy  # noqa: PLC0415
    from gateway.quality.learn import ledger_samples, parse_since  # noqa: PLC0415
    from gateway.settings import Settings  # noqa: PLC0415
    from router.adapt import adapt  # noqa: PLC0415
    from router.artifact import ArtifactError, load_artifact, save_artifact  # noqa: PLC0415
    from router.bank import BankError  # noqa: PLC0415
    from router.cli import prior  # noqa: PLC0415

    try:
        engine, policy_path, which = ledger_and_policy(Settings(), args.policy)
    except NoLedger as exc:
        print(f"tierwise router adapt: {exc}", file=sys.stderr)
        return 1
    log(which)
    try:
        loaded = load_policy(policy_path)
        cfg = loaded.policy.router
        tiers = [t.name for t in loaded.policy.tiers]
        base_path = (
            resolve_artifact(args.base)
            if args.base
            else resolve_artifact(cfg.artifact if cfg else "default", policy_path.parent)
        )
        base = load_artifact(base_path)
        method, bank = prior(args.method, base_path, base)
        found = ledger_samples(engine, tiers, base, parse_since(args.since) if args.since else None)
    except (PolicyError, ArtifactError, BankError) as exc:
        print(f"tierwise router adapt: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    log(
        f"{found.rows} judgements: {found.used} to learn from, {found.unparseable} unparseable, "
        f"{found.other_encoder} embedded by another encoder than {base.encoder!r}"
    )
    if found.used == 0:
        why = (
            f"all {found.unparseable} verdicts were unreadable: the judge does not end its answer with "
            "[[A>B]], [[B>A]] or [[A=B]] (quality.judge must name a model that follows the rubric)"
            if found.unparseable
            else "set quality.sample_rate and a judge in the policy"
            if found.rows == 0
            else f"none of the {found.rows} judgements fits this artifact (see the counts above)"
        )
        print(f"no judged samples to learn from: {why}", file=sys.stderr)
        return 1
    target = args.target_quality or (cfg.target.quality if cfg and cfg.target and cfg.target.quality else 0.95)
    artifact = adapt(
        base,
        tiers,
        found.samples,
        target_quality=target,
        method=method,
        reference=tiers[-1],
        bank=bank,
        # A tier's model as the bank knows it: its first deployment's, without a provider prefix.
        models=[t.deployments[0].model for t in loaded.policy.tiers],
        seed=args.seed,
        provenance={"from_ledger": {"judgements": found.rows, "used": found.used, "since": args.since}},
        progress=log,
    )
    save_artifact(artifact, Path(args.out))
    # The policy reads its artifact relative to its own folder, not to where this ran.
    relative = os.path.relpath(Path(args.out).resolve(), policy_path.resolve().parent)
    switch = f"router: {{artifact: {relative}}}"
    log(f"wrote {args.out} (version {artifact.version}); switch with `{switch}` in {policy_path}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from router.cli import register as register_router  # noqa: PLC0415 - argparse only, nothing heavy

    rsub = register_router(sub)
    adapt = rsub.choices["adapt"]
    adapt.add_argument("--from-ledger", action="store_true", help="learn from the judged samples in the ledger")
    adapt.add_argument("--since", default=None, help="only judgements this recent (30d, 12h)")
    adapt.add_argument(
        "--policy",
        default=None,
        help="whose tiers and target (default: the one the gateway recorded running, else TIERWISE_POLICY_PATH)",
    )
    from_file = adapt.get_default("func")
    adapt.set_defaults(func=lambda a: _adapt_from_ledger(a) if a.from_ledger else from_file(a))
    ev = rsub.choices["eval"]
    ev.add_argument(
        "--cascade", action="store_true", help="replay escalation on the gateway's checks of the recorded answers"
    )
    ev.set_defaults(func=_eval)
    c = rsub.add_parser("calibrate", help="turn the policy's router target into its cost weight")
    c.add_argument("--policy", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--tiers", required=True)
    c.add_argument("--artifact", default=None)
    c.add_argument("--sources", default=None)
    c.add_argument("--frontier-share", type=float, default=None)
    c.add_argument("--quality", type=float, default=None)
    c.add_argument("--max-cost-per-1k", type=float, default=None)
    c.add_argument("--dry-run", action="store_true")
    c.set_defaults(func=_calibrate)
