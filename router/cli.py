"""``tierwise router train | eval | cv | calibrate | adapt``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.offline import offline
from router.progress import log

if TYPE_CHECKING:
    from router.artifact import Artifact
    from router.bank import Bank
    from router.cascade import Check
    from router.data import OutcomeSet
    from router.evaluate import EvalResult

__all__ = ["evaluate_file", "load_eval_data", "log", "main", "offline", "prior", "register"]


def _train(args: argparse.Namespace) -> int:
    offline()
    from router.data import parse_tier_aliases  # noqa: PLC0415
    from router.encoders import build_encoder  # noqa: PLC0415
    from router.train import parse_data_spec, train  # noqa: PLC0415

    log(f"loading encoder {args.encoder}")
    encoder = build_encoder(args.encoder)
    train(
        [parse_data_spec(d) for d in args.data],
        parse_tier_aliases(args.tiers),
        Path(args.out),
        encoder,
        max_chars=args.max_chars,
        c=args.c,
        exclude_sources=args.exclude_sources,
        calibrate_quality=args.calibrate_quality,
        cache_dir=Path(args.cache) if args.cache else None,
        progress=log,
    )
    return 0


def load_eval_data(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from router.data import parse_tiers, read_rows, tier_matrix  # noqa: PLC0415

    rows = read_rows([Path(args.data)])
    if args.sources:
        prefixes = args.sources.split(",")
        rows = [r for r in rows if any(r.source.startswith(p) for p in prefixes)]
    return tier_matrix(rows, parse_tiers(args.tiers))


def evaluate_file(args: argparse.Namespace, check: Check | None = None) -> int:
    """``router eval``; with ``check`` (recorded answer -> the checks it fails), the cascade too:
    each choice escalated up to ``args.max_steps`` tiers while its recorded answer fails."""
    offline()
    from router.artifact import resolve_artifact  # noqa: PLC0415
    from router.cascade import check_failures, read_responses  # noqa: PLC0415
    from router.core import Router  # noqa: PLC0415
    from router.data import parse_tiers  # noqa: PLC0415
    from router.evaluate import evaluate, select_tiers, write_png  # noqa: PLC0415

    data = load_eval_data(args)
    router = Router.load(resolve_artifact(args.artifact))
    if args.exclude_samples:
        data = _without_samples(data, router.artifact.meta, Path(args.data))
    if not data.rows:
        print(f"{args.data}: no rows have every model named in --tiers", file=sys.stderr)
        return 1
    log(f"{len(data.rows)} rows ({data.skipped} skipped); router {args.artifact}")
    cols = select_tiers(router.tiers, data.tiers)
    log(f"scoring with estimators {[router.tiers[c] for c in cols]} for tiers {data.tiers}")
    feats = router.features([r.prompt for r in data.rows], progress=True)
    quality, cost = router.score_features(feats)
    first_stage = None
    if router.first_stage is not None:  # evaluate what it serves: the first stage decides where it is sure
        log(f"two-stage: the first stage ({router.first_stage.version}) decides where its margin is >= {router.margin}")
        q1, c1 = router.first_stage.score_features(router.first_stage.features([r.prompt for r in data.rows]))
        first_stage = (q1[:, cols], c1[:, cols])
    failed = None
    if check is not None:
        responses = read_responses(Path(args.data), data, parse_tiers(args.tiers))
        failed, fired = check_failures(responses, check)
        for t, tier in enumerate(data.tiers):
            log(f"{tier}: {int(failed[:, t].sum())} of {len(data.rows)} recorded answers fail ({dict(fired[t])})")
    result = evaluate(
        data,
        feats,
        quality[:, cols],
        cost[:, cols],
        failed=failed,
        max_steps=args.max_steps,
        progress=log,
        first_stage=first_stage,
        margin=router.margin,
    )
    _report(result, args.json)
    png = Path(args.png) if args.png else Path("bench/out") / f"cost_quality_{Path(args.data).stem}.png"
    write_png(result, png, title=f"{Path(args.data).name}: {' < '.join(data.tiers)}")
    log(f"wrote {png}")
    return 0


def _without_samples(data: OutcomeSet, meta: dict[str, Any], path: Path) -> OutcomeSet:
    from router.adapt import sample_ids  # noqa: PLC0415

    drawn = sample_ids(meta, path)
    log(f"leaving out the {len(drawn)} rows the artifact was adapted on")
    keep = [i for i, r in enumerate(data.rows) if r.id not in drawn]
    return replace(
        data,
        rows=[data.rows[i] for i in keep],
        scores=data.scores[keep],
        costs=data.costs[keep],
        sources=[data.sources[i] for i in keep],
    )


def _adapt(args: argparse.Namespace) -> int:
    offline()
    import hashlib  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from router.adapt import adapt, draw_samples, observed_samples  # noqa: PLC0415
    from router.artifact import ArtifactError, resolve_artifact, save_artifact  # noqa: PLC0415
    from router.bank import BankError  # noqa: PLC0415
    from router.core import Router  # noqa: PLC0415
    from router.data import parse_tiers, read_rows, tier_matrix  # noqa: PLC0415

    if not (args.data and args.tiers and args.samples):
        print("router adapt: give --data, --tiers and --samples (or, with tierwise, --from-ledger)", file=sys.stderr)
        return 2
    path = Path(args.data)
    tiers = parse_tiers(args.tiers)
    data = tier_matrix(read_rows([path]), tiers)
    idx = draw_samples(len(data.rows), args.samples, args.seed)
    log(f"{len(idx)} of {len(data.rows)} rows stand for judged samples ({args.observe}); base {args.base}")
    base_path = resolve_artifact(args.base or "default")
    router = Router.load(base_path)
    feats = router.features([data.rows[i].prompt for i in idx])
    costs = None if data.cost_in_calls else data.costs[idx]
    samples = observed_samples(feats, data.scores[idx], costs, args.observe, np.random.default_rng([args.seed, 1]))
    provenance = {
        "offline": {
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "tier_models": tiers,
            "samples": len(idx),
            "seed": args.seed,
            "observe": args.observe,
        }
    }
    try:
        method, bank = prior(args.method, base_path, router.artifact)
    except (ArtifactError, BankError) as exc:
        print(f"router adapt: {exc}", file=sys.stderr)
        return 1
    artifact = adapt(
        router.artifact,
        list(tiers),
        samples,
        target_quality=args.target_quality or 0.95,
        method=method,
        reference=list(tiers)[-1] if args.observe == "pairwise" else None,
        seed=args.seed,
        provenance=provenance,
        bank=bank,
        models=list(tiers.values()),
        progress=log,
    )
    artifact.meta["tier_models"] = {t: [m] for t, m in tiers.items()}
    save_artifact(artifact, Path(args.out))
    log(f"wrote {args.out} (version {artifact.version}, cost weight {artifact.meta['cost_weight']:.4g})")
    log(f"judge it on the other rows: router eval --artifact {args.out} --data {path} --tiers ... --exclude-samples")
    return 0


def prior(method: str | None, base_path: Path, base: Artifact) -> tuple[str, Bank | None]:
    """``router adapt``'s method and bank: the base's model bank unless another method is asked
    for (a base without a bank adapts by shrink)."""
    from router.artifact import ArtifactError  # noqa: PLC0415
    from router.bank import load_bank  # noqa: PLC0415

    if method not in (None, "bank"):
        return method, None
    if "bank" not in base.meta:
        if method == "bank":
            raise ArtifactError(f"{base_path}: this artifact has no model bank; use --method shrink or rebuild it")
        return "shrink", None
    log(f"prior: the model bank of {base_path.name} ({len(base.meta['bank']['models'])} models)")
    return "bank", load_bank(base_path, base.meta)


def _report(result: EvalResult, json_path: str | None) -> None:
    from router.evaluate import print_table, write_json  # noqa: PLC0415

    print_table(result)
    if json_path:
        write_json(result, Path(json_path))
        log(f"wrote {json_path}")


def _cv(args: argparse.Namespace) -> int:
    offline()
    from router.crossval import cross_validate  # noqa: PLC0415
    from router.data import parse_tier_aliases  # noqa: PLC0415
    from router.encoders import build_encoder  # noqa: PLC0415
    from router.train import parse_data_spec  # noqa: PLC0415

    log(f"loading encoder {args.encoder}")
    result = cross_validate(
        [parse_data_spec(d) for d in args.data],
        parse_tier_aliases(args.tiers),
        args.eval_tiers,
        build_encoder(args.encoder),
        folds=args.folds,
        c=args.c,
        by_source=args.by_source,
        exclude_sources=args.exclude_sources,
        cache_dir=Path(args.cache) if args.cache else None,
        progress=log,
    )
    _report(result, args.json)
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``router train`` and ``router eval``; returns the sub-parsers so others can add to them."""
    router = sub.add_parser("router", help="train, evaluate and calibrate the router")
    rsub = router.add_subparsers(dest="router_command", required=True)

    t = rsub.add_parser("train", help="train a router artifact from routing-outcome files")
    t.add_argument("--data", nargs="+", required=True, help="outcome JSONL files; FILE:W weights a file's rows")
    t.add_argument("--tiers", required=True, help="local=MODEL[|ALIAS],mid=...,frontier=... (cheapest first)")
    t.add_argument("--out", required=True)
    t.add_argument("--encoder", default="minilm-l6-v2")
    t.add_argument("--max-chars", type=int, default=1000, help="the tail of the prompt the encoder sees")
    t.add_argument("--c", type=float, default=0.3, help="inverse regularisation of the quality estimators")
    t.add_argument("--exclude-sources", nargs="*", default=[], help="source prefixes held out of training")
    t.add_argument(
        "--calibrate-quality", type=float, default=0.95, help="default cost weight: this share of frontier quality"
    )
    t.add_argument("--cache", default=None, help="directory to cache embeddings in")
    t.set_defaults(func=_train)

    e = rsub.add_parser("eval", help="router vs baselines on an outcome file")
    e.add_argument("--data", required=True)
    e.add_argument("--artifact", default="default")
    e.add_argument("--tiers", required=True, help="tier=MODEL,... cheapest first; two tiers for APGR/CPT")
    e.add_argument("--sources", default=None, help="only rows whose source starts with one of these (comma-separated)")
    e.add_argument("--json", default=None)
    e.add_argument("--png", default=None)
    e.add_argument(
        "--exclude-samples", action="store_true", help="leave out the rows an adapted artifact drew from this file"
    )
    e.add_argument("--max-steps", type=int, default=1, help="escalations at most, with tierwise's --cascade")
    e.set_defaults(func=evaluate_file)

    a = rsub.add_parser("adapt", help="adapt an artifact to the policy's tiers from judged samples")
    a.add_argument("--base", default=None, help="the prior: a shipped artifact's name or a directory (default)")
    a.add_argument("--data", help="outcome file whose rows' recorded scores stand for verdicts")
    a.add_argument("--tiers", help="tier=MODEL,... cheapest first: the policy's own tiers")
    a.add_argument("--samples", type=int, help="rows drawn at random as the judged samples")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", required=True)
    a.add_argument(
        "--method",
        default=None,
        choices=["bank", "shrink", "stack", "warm", "scratch"],
        help="the prior: the tier models' abilities in the base's model bank (the default where it has one), "
        "or the base's own estimators (shrink)",
    )
    a.add_argument(
        "--observe",
        default="full",
        choices=["full", "partial", "pairwise"],
        help="what a sample reveals: every tier, or one cheaper tier and the top (scores, or a judge's verdict)",
    )
    a.add_argument("--target-quality", type=float, default=None, help="calibrate the cost weight to this (0.95)")
    a.set_defaults(func=_adapt)

    v = rsub.add_parser("cv", help="k-fold cross-validation of the training recipe on the first --data file")
    v.add_argument("--data", nargs="+", required=True, help="the file to split, then auxiliary files (FILE:W)")
    v.add_argument("--tiers", required=True, help="training tiers, as for train")
    v.add_argument("--eval-tiers", required=True, help="tier=MODEL,... of the first file to judge on")
    v.add_argument("--encoder", default="static-minilm-l6-v2")
    v.add_argument("--folds", type=int, default=5)
    v.add_argument("--c", type=float, default=0.3, help="as for train")
    v.add_argument("--by-source", action="store_true", help="folds of whole sources (tasks unseen in training)")
    v.add_argument("--exclude-sources", nargs="*", default=[])
    v.add_argument("--json", default=None)
    v.add_argument("--cache", default=None, help="directory to cache embeddings in (auxiliary files hit it)")
    v.set_defaults(func=_cv)
    return rsub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
