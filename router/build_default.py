"""Build the shipped artifacts from ../shared/data/routing, reproducibly, and judge the recipe.

    python -m router.build_default --encoder ENC --out DIR [--first-stage DIR --margin M]
    python -m router.build_default --encoder ENC [--first-stage DIR --margin M] --cv | --cv-subjects | --cv-arena

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

Deterministic for a given data set and library versions: the estimators are convex fits, the
calibration split has a fixed seed and the ONNX export is byte-for-byte reproducible. Eight MMLU
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
from pathlib import Path

from router.encoders import Encoder, build_encoder

__all__ = ["HELD_OUT_MMLU", "TIERS", "main"]

TIERS = (
    "local=mistralai/mistral-7b-chat|mistralai/Mistral-7B-v0.1,"
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


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _encoder(name: str, cache: Path | None) -> Encoder:
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
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--cv", action="store_true", help="5-fold CV on routerbench_train instead of building")
    check.add_argument("--cv-subjects", action="store_true", help="CV over whole MMLU subjects instead")
    check.add_argument("--cv-arena", action="store_true", help="Arena-Hard by whole topic clusters instead")
    args = parser.parse_args(argv)

    from router.crossval import cross_validate  # noqa: PLC0415
    from router.data import parse_tier_aliases  # noqa: PLC0415
    from router.evaluate import print_table  # noqa: PLC0415
    from router.train import DataSpec, train  # noqa: PLC0415

    d = Path(args.data_dir)
    cache = Path(args.cache) if args.cache else None
    tiers = parse_tier_aliases(TIERS)
    rb, mmlu = DataSpec(d / "routerbench_train.jsonl"), DataSpec(d / "mmlu_train.jsonl", MMLU_WEIGHT)
    aux = [DataSpec(d / name, AUX_WEIGHT) for name in OPEN7B]
    _log(f"loading encoder {args.encoder}")
    encoder = _encoder(args.encoder, cache)
    first = None
    if args.first_stage:
        from router.artifact import load_artifact  # noqa: PLC0415

        first = (_encoder(load_artifact(Path(args.first_stage)).encoder, cache), args.margin)

    if args.cv or args.cv_subjects or args.cv_arena:
        exclude: tuple[str, ...]
        evaluated = ",".join(t.split("|")[0] for t in TIERS.split(","))
        if args.cv:
            data, on, by_source, exclude = [rb, mmlu, *aux], evaluated, False, HELD_OUT_MMLU
        elif args.cv_subjects:
            mid, frontier = (t.split("=")[1].split("|")[-1] for t in TIERS.split(",")[1:])
            data, on, by_source, exclude = [mmlu, rb, *aux], f"mid={mid},frontier={frontier}", True, ()
        else:
            arena = DataSpec(d / "arena_hard_train.jsonl")
            data, on, by_source, exclude = [arena, rb, mmlu, *aux], ARENA_TIERS, True, HELD_OUT_MMLU
        result = cross_validate(
            data, tiers, on, encoder, by_source=by_source, exclude_sources=exclude, first_stage=first, progress=_log
        )
        print_table(result)
        return 0

    out = Path(args.out or "router/artifacts/default")
    train([rb, mmlu, *aux], tiers, out, encoder, exclude_sources=HELD_OUT_MMLU, progress=_log)
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


if __name__ == "__main__":
    sys.exit(main())
