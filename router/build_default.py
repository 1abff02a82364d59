"""Rebuild the shipped artifact (``router/artifacts/default``) from ../shared/data/routing.

    python -m router.build_default [--data-dir DIR] [--cache DIR] [--encoder minilm-l6-v2] [--cv | --cv-subjects]

``default`` uses the static encoder distilled from MiniLM (decisions in ~0.4 ms, no torch at serve
time); ``minilm`` runs MiniLM itself (13-70 ms a decision on one thread; level with the static one
under cross-validation). See the router issue's notes for the tables behind that choice.

Deterministic for a given data set and library versions: the estimators are convex fits and
the calibration split has a fixed seed. Eight MMLU subjects are held out of training so the
two-tier MMLU figures are measured on subjects the router has never seen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router.artifact import default_artifact_dir

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"))
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default=None, help="default: router/artifacts/default (static) or /minilm")
    parser.add_argument("--cv", action="store_true", help="5-fold CV of this recipe on routerbench_train instead")
    parser.add_argument(
        "--cv-subjects",
        action="store_true",
        help="instead: CV over whole MMLU subjects (all 40; each fold's subjects unseen), mid vs frontier",
    )
    parser.add_argument(
        "--encoder", default="static-minilm-l6-v2", help="static-minilm-l6-v2 (default) or minilm-l6-v2"
    )
    args = parser.parse_args(argv)
    d = Path(args.data_dir)
    files = [f"{d / 'routerbench_train.jsonl'}", f"{d / 'mmlu_train.jsonl'}:{MMLU_WEIGHT}"]
    files += [
        f"{d / name}:{AUX_WEIGHT}"
        for name in (
            "open7b_gsm8k_train.jsonl",
            "open7b_math_prealgebra.jsonl",
            "open7b_humaneval_train.jsonl",
            "open7b_arc_easy_train.jsonl",
        )
    ]
    from router.cli import main as cli  # noqa: PLC0415

    cache = ["--cache", args.cache] if args.cache else []
    if args.cv_subjects:
        mid, frontier = (t.split("=")[1].split("|")[-1] for t in TIERS.split(",")[1:])
        cmd = ["router", "cv", "--data", files[1], files[0], *files[2:], "--tiers", TIERS, "--by-source"]
        cmd += ["--eval-tiers", f"mid={mid},frontier={frontier}", "--encoder", args.encoder, *cache]
        return cli(cmd)
    if args.cv:
        evaluated = ",".join(t.split("|")[0] for t in TIERS.split(","))
        cmd = ["router", "cv", "--data", *files, "--tiers", TIERS, "--eval-tiers", evaluated, "--encoder", args.encoder]
        cmd += ["--exclude-sources", *HELD_OUT_MMLU, *cache]
        return cli(cmd)
    out = args.out or str(
        default_artifact_dir().parent / ("default" if args.encoder.startswith("static") else "minilm")
    )
    cmd = ["router", "train", "--data", *files, "--tiers", TIERS, "--out", out, "--encoder", args.encoder]
    cmd += ["--exclude-sources", *HELD_OUT_MMLU]
    if args.cache:
        cmd += ["--cache", args.cache]
    return cli(cmd)


if __name__ == "__main__":
    sys.exit(main())
