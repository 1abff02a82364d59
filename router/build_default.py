"""Build the shipped artifacts from ../shared/data/routing, reproducibly, and judge the recipe.

    python -m router.build_default --encoder ENC [--quality bank] --out DIR [--first-stage DIR --margin M]
    python -m router.build_default --encoder ENC [--first-stage DIR --margin M] --cv | --cv-subjects | --cv-arena
    python -m router.build_default --encoder ENC [--quality bank] [--chat-weight W] --lofo [--json FILE]

Every artifact carries a model bank (``router.bank``: every model of the shared data located in
one ability space), the prior ``router adapt`` starts a policy's tiers from. With ``--quality
bank`` the artifact's own tiers are their models' abilities in it too, instead of estimators
fitted per tier: what the leave-one-family-out check prefers, so ``default`` is built that way.

``default`` uses the static encoder distilled from MiniLM (decisions in under a millisecond);
``minilm`` runs MiniLM itself through ONNX Runtime (int8, no torch); ``two-stage`` puts
``default`` first and ``minilm`` behind it for the prompts ``default`` is unsure of
(``router.core``). ``make router-artifact`` has the commands; bench/README.md (Router) the
measurements behind the choice of default.

Checks (out-of-fold, each pooled and judged like ``router eval``):
  --cv           5-fold CV on routerbench_train (three tiers, cost at 95%/97% of GPT-4 quality)
  --cv-subjects  CV over whole MMLU subjects (all 40; each fold's subjects unseen), Mixtral vs GPT-4
  --cv-arena     Arena-Hard-Auto prompts (chat), GPT-3.5 vs GPT-4, folds of whole topic clusters.
                 Arena-Hard is a held-out judgement: it is never training data (its models are
                 not the recipe's tiers), so every fold's router is the recipe's.
  --lofo         leave one family out (``router.lofo``): each RouterBench task, four groups of
                 MMLU subjects, the open-model sets, Arena-Hard and the chat set in turn left
                 out of training and scored (the eight held-out subjects are never trained on).
                 The check that chooses the shipped default (bench/README.md, Router).

``--chat-weight W`` adds ``arena_bench_v1`` (real Chatbot Arena prompts, GPT-4-graded answers of
the three tiers' models) to the training data at weight W: the only chat-shaped outcomes the
tiers' own models have.

Deterministic for a given data set and library versions: the estimators are convex fits, the
bank a fixed number of L-BFGS steps from a seeded start, the calibration split has a fixed seed
and the ONNX export is byte-for-byte reproducible. Eight MMLU
subjects are held out of training so the two-tier MMLU figures are measured on subjects the
router has never seen.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from router.artifact import Artifact
from router.bank import Bank
from router.encoders import Encoder, build_encoder
from router.lofo import Recipe
from router.train import DataSpec

__all__ = ["HELD_OUT_MMLU", "TIERS", "build_bank", "main", "offline_encoder", "trainer", "with_bank"]

TIERS = (
    "local=mistralai/mistral-7b-chat|mistralai/Mistral-7B-v0.1|mistralai/Mistral-7B-Instruct-v0.1,"
    "mid=mistralai/mixtral-8x7b-chat|mistralai/Mixtral-8x7B-Instruct-v0.1,"
    "frontier=gpt-4-1106-preview"
)
HELD_OUT_MMLU = (
    "mmlu/college_physics",
    "mmlu/high_school_psychology",
    "mmlu/professional_law",
    "mmlu/marketing",
    "mmlu/econometrics",
    "mmlu/high_school_world_history",
    "mmlu/nutrition",
    "mmlu/formal_logic",
)
# Auxiliary domains inform the estimators without pulling them off RouterBench's tasks. MMLU
# (the only auxiliary file with the mid and frontier models) at 0.1: more raised RouterBench
# dev and lowered held-out-subject APGR, i.e. it learns the 40 subjects rather than difficulty.
AUX_WEIGHT = 0.03
MMLU_WEIGHT = 0.1
OPEN7B = (
    "open7b_gsm8k_train.jsonl",
    "open7b_math_prealgebra.jsonl",
    "open7b_humaneval_train.jsonl",
    "open7b_arc_easy_train.jsonl",
)
ARENA_TIERS = "mid=gpt-3.5-turbo-0125,frontier=gpt-4-0314"
RB_TASKS = ("arc-challenge", "mbpp", "winogrande")
CHAT = "arena_bench_v1.jsonl"
THREE_TIERS = "local=mistralai/mistral-7b-chat,mid=mistralai/mixtral-8x7b-chat,frontier=gpt-4-1106-preview"
TWO_TIERS = "mid=mistralai/Mixtral-8x7B-Instruct-v0.1,frontier=gpt-4-1106-preview"
OPEN7B_TIERS = "weak=mistralai/Mistral-7B-v0.1,strong=meta-llama/Meta-Llama-3-8B"


# The model bank (``router.bank``): every file's models; one model's spellings across files merged,
# and the names a policy is likely to give them (canonical form: ``router.bank.canonical``).
BANK_WEIGHTS = {
    "routerbench_train.jsonl": 1.0,
    "arena_hard_train.jsonl": 1.0,
    CHAT: 1.0,
    "mmlu_train.jsonl": MMLU_WEIGHT,
    **dict.fromkeys(OPEN7B, MMLU_WEIGHT),
}
BANK_ALIASES = {
    "mixtral-8x7b-chat": "mixtral-8x7b-instruct-v0.1",
    "mixtral-8x7b-instruct": "mixtral-8x7b-instruct-v0.1",
    "open-mixtral-8x7b": "mixtral-8x7b-instruct-v0.1",
    "mistral-7b-chat": "mistral-7b-instruct-v0.1",
    "mistral-7b-instruct": "mistral-7b-instruct-v0.1",
    "open-mistral-7b": "mistral-7b-instruct-v0.1",
    "claude-instant-v1": "claude-instant-1",
    "claude-instant-1.2": "claude-instant-1",
    "claude-v1": "claude-1",
    "claude-2": "claude-v2",
    "claude-2.0": "claude-v2",
    "gpt-4-turbo-preview": "gpt-4-1106-preview",
    "gpt-4": "gpt-4-0613",
    "gpt-3.5-turbo-0613": "gpt-3.5-turbo",
    "llama-2-70b-chat-hf": "llama-2-70b-chat",
    "yi-34b": "yi-34b-chat",
}


def build_bank(
    d: Path,
    encoder: Encoder,
    max_chars: int,
    cache: Path | None,
    exclude_ids: Collection[str] = (),
    exclude_sources: Sequence[str] = (),
) -> Bank:
    """The model bank over every outcome file, less the held-out MMLU subjects and what is excluded."""
    from router.bank import collect, fit_bank  # noqa: PLC0415
    from router.data import read_rows  # noqa: PLC0415
    from router.train import embed_rows  # noqa: PLC0415

    parts = []
    for name, weight in BANK_WEIGHTS.items():
        rows = [
            r
            for r in read_rows([d / name])
            if not r.source.startswith((*HELD_OUT_MMLU, *exclude_sources)) and r.id not in exclude_ids
        ]
        parts.append((rows, embed_rows(rows, encoder, max_chars, cache, progress=False), weight))
    data, models = collect(parts, BANK_ALIASES)
    return fit_bank(data, models, aliases=BANK_ALIASES, progress=_log)


def trainer(
    data: Sequence[DataSpec], tiers: dict[str, list[str]], encoder: Encoder, max_chars: int, cache: Path | None
) -> Recipe:
    """The recipe: ``router train`` on ``data`` with the eight MMLU subjects held out."""
    from router.train import train, without_rows  # noqa: PLC0415

    def fit(prefixes: tuple[str, ...], ids: frozenset[str], out: Path) -> Artifact:
        specs = [without_rows(s, set(ids), out.with_name(f"{out.name}-{s.path.name}")) for s in data]
        sources = [*HELD_OUT_MMLU, *prefixes]
        return train(
            specs, tiers, out, encoder, max_chars=max_chars, exclude_sources=sources, cache_dir=cache, progress=_log
        )

    return fit


def with_bank(
    fit: Recipe, d: Path, tiers: dict[str, list[str]], encoder: Encoder, cache: Path | None, *, tier_quality: bool
) -> Recipe:
    """The recipe with the model bank saved inside its artifact (what ``router adapt --method
    bank`` starts from) and, with ``tier_quality``, the tiers' quality estimators taken from it:
    each tier is its model's ability in the bank, the cost weight recalibrated for them."""

    def fit_with_bank(prefixes: tuple[str, ...], ids: frozenset[str], out: Path) -> Artifact:
        from router.artifact import save_artifact  # noqa: PLC0415
        from router.bank import save_bank  # noqa: PLC0415

        artifact = fit(prefixes, ids, out)
        bank = build_bank(d, encoder, artifact.max_chars, cache, exclude_ids=ids, exclude_sources=prefixes)
        if tier_quality:
            m = artifact.models
            for i, tier in enumerate(artifact.tiers):
                known = next((name for name in tiers[tier] if bank.find(name) is not None), None)
                if known is None:
                    raise ValueError(f"the model bank knows none of tier {tier}'s models {tiers[tier]}")
                w, b = bank.estimator(*bank.ability(known)[:2])
                m.quality_w[i], m.quality_b[i] = w.astype(np.float32), np.float32(b)
            artifact.meta["estimator"] = {**artifact.meta["estimator"], "quality": "the tier model's ability (bank)"}
            artifact.meta["calibration"] = _calibrate(artifact, d, encoder, ids, prefixes)
            artifact.meta["cost_weight"] = artifact.meta["calibration"]["cost_weight"]
        artifact.meta["bank"] = save_bank(bank, out)
        artifact.meta.pop("version", None)
        save_artifact(artifact, out)
        return artifact

    return fit_with_bank


def _calibrate(
    artifact: Artifact, d: Path, encoder: Encoder, ids: frozenset[str], prefixes: tuple[str, ...]
) -> dict[str, object]:
    """The cost weight for 95% of frontier quality on the training RouterBench rows (the bank
    was fitted on them too: in-sample, so it leans cheap; ``router calibrate`` refits per policy)."""
    from router.calibrate import fit_cost_weight  # noqa: PLC0415
    from router.core import Router  # noqa: PLC0415
    from router.data import parse_tiers, read_rows, tier_matrix  # noqa: PLC0415

    rows = [
        r
        for r in read_rows([d / "routerbench_train.jsonl"])
        if r.id not in ids and not r.source.startswith(prefixes or ("\0",))
    ]
    data = tier_matrix(rows, parse_tiers(THREE_TIERS))
    q, c = Router(artifact, encoder, cache_size=0).score([r.prompt for r in data.rows])
    weight = fit_cost_weight(q, c, data.scores, data.costs, quality=0.95)
    return {"target_quality": 0.95, "rows": len(data.rows), "cost_weight": weight, "in_sample": True}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def offline_encoder(name: str, cache: Path | None) -> Encoder:
    # Offline work may use every core; the gateway's encoders run on one thread.
    encoder = build_encoder(name, threads=os.cpu_count() or 1)
    if cache is None:
        return encoder
    from router.encoders.memo import MemoEncoder  # noqa: PLC0415

    return MemoEncoder(encoder, cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"))
    parser.add_argument("--cache", default=None, help="remember embeddings here between runs (CV re-embeds less)")
    parser.add_argument("--out", default=None, help="artifact directory to write")
    parser.add_argument("--encoder", default="static-minilm-l6-v2")
    parser.add_argument("--first-stage", default=None, help="artifact deciding first (built with the same recipe)")
    parser.add_argument("--margin", type=float, default=0.03, help="utility margin at which the first stage decides")
    parser.add_argument("--chat-weight", type=float, default=0.0, help=f"train on {CHAT} at this weight (0: not)")
    parser.add_argument("--max-chars", type=int, default=1000, help="how much of the prompt's tail the encoder gets")
    parser.add_argument("--json", default=None, help="--lofo: write the figures here too")
    parser.add_argument(
        "--quality",
        default="logistic",
        choices=["logistic", "bank"],
        help="the tiers' quality estimators: fitted per tier, or the tier models' abilities in the model bank",
    )
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--cv", action="store_true", help="5-fold CV on routerbench_train instead of building")
    check.add_argument("--cv-subjects", action="store_true", help="CV over whole MMLU subjects instead")
    check.add_argument("--cv-arena", action="store_true", help="Arena-Hard by whole topic clusters instead")
    check.add_argument("--lofo", action="store_true", help="leave one data family out at a time instead")
    args = parser.parse_args(argv)

    from router.crossval import cross_validate  # noqa: PLC0415
    from router.data import parse_tier_aliases  # noqa: PLC0415
    from router.evaluate import print_table  # noqa: PLC0415

    d = Path(args.data_dir)
    cache = Path(args.cache) if args.cache else None
    tiers = parse_tier_aliases(TIERS)
    rb, mmlu = DataSpec(d / "routerbench_train.jsonl"), DataSpec(d / "mmlu_train.jsonl", MMLU_WEIGHT)
    aux = [DataSpec(d / name, AUX_WEIGHT) for name in OPEN7B]
    if args.chat_weight > 0:
        aux.append(DataSpec(d / CHAT, args.chat_weight))
    _log(f"loading encoder {args.encoder}")
    encoder = offline_encoder(args.encoder, cache)
    first = None
    if args.first_stage:
        from router.artifact import load_artifact  # noqa: PLC0415

        first = (offline_encoder(load_artifact(Path(args.first_stage)).encoder, cache), args.margin)

    recipe = trainer([rb, mmlu, *aux], tiers, encoder, args.max_chars, cache)
    bank_inside = with_bank(recipe, d, tiers, encoder, cache, tier_quality=args.quality == "bank")
    if args.lofo:
        # The bank reads every file, so a recipe using it trains on all of their sources.
        files = [s.path for s in (rb, mmlu, *aux)] + ([d / f for f in BANK_WEIGHTS] if args.quality == "bank" else [])
        return _lofo(bank_inside if args.quality == "bank" else recipe, files, d, encoder, args.json)
    if args.cv or args.cv_subjects or args.cv_arena:
        exclude: tuple[str, ...]
        if args.cv:
            data, on, by_source, exclude = [rb, mmlu, *aux], THREE_TIERS, False, HELD_OUT_MMLU
        elif args.cv_subjects:
            data, on, by_source, exclude = [mmlu, rb, *aux], TWO_TIERS, True, ()
        else:
            arena = DataSpec(d / "arena_hard_train.jsonl")
            data, on, by_source, exclude = [arena, rb, mmlu, *aux], ARENA_TIERS, True, HELD_OUT_MMLU
        result = cross_validate(
            data, tiers, on, encoder, by_source=by_source, exclude_sources=exclude, first_stage=first, progress=_log
        )
        print_table(result)
        return 0

    out = Path(args.out or "router/artifacts/default")
    bank_inside((), frozenset(), out)
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text())
    inner = getattr(encoder, "inner", encoder)
    if hasattr(inner, "provenance"):
        meta["encoder_provenance"] = inner.provenance
    if first is not None:
        stage1 = out / "stage1"
        shutil.rmtree(stage1, ignore_errors=True)
        shutil.copytree(args.first_stage, stage1)
        stage1_meta = json.loads((stage1 / "meta.json").read_text())
        meta["first_stage"] = {
            "artifact": "stage1",
            "encoder": stage1_meta["encoder"],
            "margin": args.margin,
            "model_sha256": stage1_meta["model_sha256"],
        }
        meta["version"] = f"two-stage-{stage1_meta['model_sha256'][:6]}-{meta['model_sha256'][:6]}"
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    _log(f"{out}: version {meta['version']}")
    return 0


def _lofo(recipe: Recipe, files: list[Path], d: Path, encoder: Encoder, out: str | None) -> int:
    from router.data import read_rows  # noqa: PLC0415
    from router.lofo import Family, headline, leave_one_family_out, mmlu_groups  # noqa: PLC0415

    rb = (d / "routerbench_train.jsonl", d / "routerbench_dev.jsonl")
    mmlu = (d / "mmlu_train.jsonl",)
    subjects = [r.source for r in read_rows(mmlu) if r.source not in HELD_OUT_MMLU]
    families = [
        *(Family(f"routerbench/{task}", rb, (f"routerbench/{task}",), THREE_TIERS) for task in RB_TASKS),
        *(
            Family(f"mmlu subjects, group {i + 1}/4", mmlu, group, TWO_TIERS)
            for i, group in enumerate(mmlu_groups(subjects, 4))
        ),
        Family("mmlu, 8 held-out subjects", mmlu, HELD_OUT_MMLU, TWO_TIERS),
        Family("open7b math, code, science", tuple(d / f for f in OPEN7B), ("open7b/",), OPEN7B_TIERS),
        Family("arena-hard (chat)", (d / "arena_hard_train.jsonl",), ("arena_hard/",), ARENA_TIERS),
        Family("arena-bench-v1 (chat; 5-fold where trained on)", (d / CHAT,), ("arena_bench_v1",), TWO_TIERS, folds=5),
    ]
    trained_on = {r.source for r in read_rows(sorted(set(files)))}
    results = leave_one_family_out(recipe, trained_on, families, encoder, never=HELD_OUT_MMLU, progress=_log)
    rows = []
    for r in results:
        figures = headline(r.result)
        rows.append({"family": r.family, "rows": r.result.n, "trained_without": r.trained_without, **figures})
        shown = "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in figures.items())
        print(f"{r.family:<40}{r.result.n:>6}  {shown}")
    if out:
        payload = {"encoder": encoder.name, "training_files": sorted({f.name for f in files}), "families": rows}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
