"""The router on real data with the real encoder: train, round-trip, refuse tampering,
evaluate, calibrate, and route end to end through the gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from router import ArtifactError, Router, default_artifact_dir, load_artifact
from router.calibrate import fit_cost_weight, write_cost_weight
from router.core import choose
from router.data import parse_tier_aliases, parse_tiers, read_rows, tier_matrix
from router.encoders import Encoder, build_encoder
from router.metrics import aiq, apgr_cpt, cost_at_quality, hull
from router.train import DataSpec, train
from tests.conftest import REPO, GatewayFactory, require_shared_data

RB_TIERS = "local=mistralai/mistral-7b-chat,mid=mistralai/mixtral-8x7b-chat,frontier=gpt-4-1106-preview"


def _winogrande(sentence: str, a: str, b: str) -> str:
    return (
        f"Please answer with the letter of the correct answer.\n\n{sentence}\nA) {a}\nB) {b}\n"
        'Print only a single choice from "A" or "B" without explanation. Answer:'
    )


# A few-shot Winogrande coreference prompt in the form RouterBench measured (GPT-4's largest lead
# over Mixtral). The same puzzle asked bare is short and chat-like, and the router sends it to mid.
HARD_PROMPT = "\n\n".join(
    [
        _winogrande(
            "The trophy doesn't fit into the brown suitcase because _ is too large.", "the trophy", "the suitcase"
        )
        + "\nA",
        _winogrande("Jane gave Joan candy because _ was hungry.", "Jane", "Joan") + "\nB",
        _winogrande(
            "The councilmen refused the marchers a permit because _ feared violence.", "the councilmen", "the marchers"
        )
        + "\nA",
        _winogrande("Sarah was a much better surgeon than Maria so _ always got the harder cases.", "Sarah", "Maria"),
    ]
)


ENCODER = "minilm-l6-v2-onnx-int8-t64"


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return build_encoder(ENCODER, threads=2)


@pytest.fixture(scope="session")
def default_router() -> Router:
    """The shipped default artifact (static encoder distilled from MiniLM)."""
    return Router.load(default_artifact_dir())


def test_shipped_artifacts_load_and_agree_on_tiers() -> None:
    shipped = {name: Router.load(default_artifact_dir().parent / name) for name in ("default", "minilm", "two-stage")}
    assert shipped["default"].artifact.encoder == "static-minilm-l6-v2"
    assert shipped["minilm"].artifact.encoder == shipped["two-stage"].artifact.encoder == ENCODER
    for r in shipped.values():
        assert r.tiers == ["local", "mid", "frontier"]
        provenance = {d["file"] for d in r.artifact.meta["training_data"]}
        assert "routerbench_train.jsonl" in provenance and "routerbench_dev.jsonl" not in provenance
    # the transformer artifacts record which exported model file they were trained against
    assert shipped["minilm"].artifact.meta["encoder_provenance"]["quantization"].startswith("onnxruntime dynamic int8")


@pytest.fixture(scope="session")
def slices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small slices of the shared data: a train slice and a disjoint held-out slice."""
    data = require_shared_data()
    out = tmp_path_factory.mktemp("slices")
    lines = (data / "routerbench_train.jsonl").read_text().splitlines()
    rng = np.random.default_rng(7)
    order = rng.permutation(len(lines))
    (out / "train.jsonl").write_text("\n".join(lines[i] for i in order[:500]) + "\n")
    (out / "heldout.jsonl").write_text("\n".join(lines[i] for i in order[500:800]) + "\n")
    mmlu = (data / "mmlu_train.jsonl").read_text().splitlines()
    (out / "mmlu.jsonl").write_text("\n".join(mmlu[::40]) + "\n")
    return {"train": out / "train.jsonl", "heldout": out / "heldout.jsonl", "mmlu": out / "mmlu.jsonl"}


@pytest.fixture(scope="session")
def small_artifact(slices: dict[str, Path], encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "small"
    tiers = parse_tier_aliases(
        "local=mistralai/mistral-7b-chat,mid=mistralai/mixtral-8x7b-chat|mistralai/Mixtral-8x7B-Instruct-v0.1,frontier=gpt-4-1106-preview"
    )
    train([DataSpec(slices["train"]), DataSpec(slices["mmlu"], 0.1)], tiers, out, encoder, progress=lambda _: None)
    return out


def test_tail_with_its_length_scores_like_the_whole_prompt(default_router: Router) -> None:
    # The gateway hands the router the last 2,000 characters of a long turn plus the turn's length;
    # the length feature was trained on whole prompts, so that must score as the whole prompt does.
    doc = "Background paragraph on the quarterly figures. " * 200 + "\nWhich quarter had the highest margin?"
    tail = doc[-2000:]
    whole = default_router.features([doc])
    np.testing.assert_allclose(default_router.features([tail], lengths=[len(doc)]), whole, rtol=1e-6)
    assert not np.allclose(default_router.features([tail]), whole)  # the tail alone looks shorter
    assert default_router.decide(tail, length=len(doc)).scores == default_router.decide(doc).scores


def test_metrics_on_known_points() -> None:
    pts = [(0.1, 0.5), (0.5, 0.8), (1.0, 0.9), (0.6, 0.6)]
    assert hull(pts) == [(0.1, 0.5), (0.5, 0.8), (1.0, 0.9)]
    assert cost_at_quality(pts, 0.85) == pytest.approx(0.75)
    assert cost_at_quality(pts, 0.95) is None
    assert 0.5 < aiq(pts, 1.0) < 0.9
    weak, strong = np.array([0, 0, 1, 1.0]), np.array([1, 1, 1, 1.0])
    apgr, (c50, c80) = apgr_cpt(strong - weak, weak, strong)  # a perfect ranking
    assert apgr > 0.7 and c50 == 0.25 and c80 == 0.5


def test_artifact_round_trips_and_is_typed(small_artifact: Path, encoder: Encoder, slices: dict[str, Path]) -> None:
    meta = json.loads((small_artifact / "meta.json").read_text())
    assert meta["encoder"] == ENCODER and meta["tiers"] == ["local", "mid", "frontier"]
    assert {d["file"] for d in meta["training_data"]} == {"train.jsonl", "mmlu.jsonl"}
    assert all(len(d["sha256"]) == 64 for d in meta["training_data"])
    router = Router.load(small_artifact, encoder=encoder)
    prompts = [r.prompt for r in read_rows([slices["heldout"]])[:20]]
    q1, c1 = router.score(prompts)
    copy = small_artifact.parent / "copy"
    shutil.copytree(small_artifact, copy)
    q2, c2 = Router.load(copy, encoder=encoder).score(prompts)
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(c1, c2)
    assert ((q1 >= 0) & (q1 <= 1)).all() and (c1 > 0).all()
    # an artifact written before the length scale was recorded keeps the scale it was trained with
    assert meta["length_scale"] == 1.0
    del meta["length_scale"]
    (copy / "meta.json").write_text(json.dumps(meta))
    assert load_artifact(copy).length_scale == 0.1
    # the frontier tier is predicted to be better on average than the local tier on benchmark prompts
    assert q1[:, 2].mean() > q1[:, 0].mean()


def test_tampered_or_corrupt_artifact_is_refused(small_artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(small_artifact, bad)
    data = bytearray((bad / "model.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.npz").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(bad)
    shutil.rmtree(bad)
    shutil.copytree(small_artifact, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["tiers"] = ["a", "b"]  # re-labelled without retraining: shapes no longer match
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="shape"):
        load_artifact(bad)
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        load_artifact(bad)
    with pytest.raises(ArtifactError, match="not a router artifact"):
        load_artifact(tmp_path / "nowhere")


def test_calibration_hits_target_share_on_held_out_rows(
    small_artifact: Path, encoder: Encoder, slices: dict[str, Path]
) -> None:
    router = Router.load(small_artifact, encoder=encoder)
    rows = read_rows([slices["heldout"]])
    calib, held = rows[:150], rows[150:]
    q, c = router.score([r.prompt for r in calib])
    weight = fit_cost_weight(q, c, frontier_share=0.3)
    qh, ch = router.score([r.prompt for r in held])
    share = float(np.mean(choose(qh, ch, weight) == 2))
    assert abs(share - 0.3) <= 0.10, share  # stated tolerance: +-10 points on 150 unseen rows

    data = tier_matrix(calib, parse_tiers(RB_TIERS))
    w95 = fit_cost_weight(q, c, data.scores, data.costs, quality=0.95)
    pick = choose(q, c, w95)
    assert data.scores[np.arange(len(pick)), pick].mean() >= 0.95 * data.scores[:, -1].mean() - 1e-9


def test_write_cost_weight_keeps_comments(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("# top comment\ntiers: []\nrouter:\n  artifact: default  # keep me\n  cost_weight: 0.5\nroutes: []\n")
    write_cost_weight(p, 0.125)
    text = p.read_text()
    assert "# top comment" in text and "# keep me" in text and "cost_weight: 0.125" in text and "0.5" not in text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_eval_cli_on_unseen_file_json_and_png(small_artifact: Path, slices: dict[str, Path], tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "eval.json", tmp_path / "curve.png"
    # a file with a row lacking a named model, to check skipping
    text = slices["heldout"].read_text().splitlines()[:120]
    broken = json.loads(text[0])
    broken["outcomes"].pop("gpt-4-1106-preview")
    (tmp_path / "f.jsonl").write_text("\n".join([json.dumps(broken), *text[1:]]) + "\n")
    r = _cli(
        "router",
        "eval",
        "--data",
        str(tmp_path / "f.jsonl"),
        "--artifact",
        str(small_artifact),
        "--tiers",
        RB_TIERS,
        "--json",
        str(out_json),
        "--png",
        str(out_png),
    )
    assert r.returncode == 0, r.stderr
    assert "tierwise" in r.stdout and "oracle" in r.stdout
    got = json.loads(out_json.read_text())
    assert got["n"] == 119 and got["skipped"] == 1
    assert {"tierwise", "random", "always-local", "always-frontier", "length", "knn", "oracle"} <= set(got["routers"])
    for metrics in got["routers"].values():
        assert set(metrics) == {"apgr", "cpt50", "cpt80", "cost_at_95", "cost_at_97", "aiq"}
        for v in metrics.values():
            assert v is None or 0 <= v <= 1.5
    assert got["routers"]["always-frontier"]["cost_at_95"] == pytest.approx(1.0)
    assert out_png.stat().st_size > 10_000

    # two tiers, a file without costs (MMLU): APGR and CPT are defined; tiers named freely
    r = _cli(
        "router",
        "eval",
        "--data",
        str(slices["mmlu"]),
        "--artifact",
        str(small_artifact),
        "--tiers",
        "weak=mistralai/Mixtral-8x7B-Instruct-v0.1,strong=gpt-4-1106-preview",
        "--json",
        str(out_json),
        "--png",
        str(out_png),
    )
    assert r.returncode == 0, r.stderr
    two = json.loads(out_json.read_text())["routers"]
    assert two["tierwise"]["apgr"] is not None and two["random"]["cpt50"] is not None
    assert two["oracle"]["apgr"] > two["tierwise"]["apgr"]


def test_eval_cli_cascade_replays_the_gateways_checks(
    small_artifact: Path, slices: dict[str, Path], tmp_path: Path
) -> None:
    """Recorded local answers that are empty or refused escalate a tier up: the cascade serves mid's
    answer there and pays for both, so it beats routing alone on quality at a price."""
    rows = [json.loads(line) for line in slices["heldout"].read_text().splitlines()[:150]]
    local = "mistralai/mistral-7b-chat"
    for i, row in enumerate(rows):
        if row["outcomes"][local]["score"] < 0.5:
            row["outcomes"][local]["response"] = "" if i % 2 else "I'm sorry, but I can't help with that."
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_json = tmp_path / "eval.json"
    args = ["router", "eval", "--data", str(tmp_path / "f.jsonl"), "--artifact", str(small_artifact)]
    r = _cli(*args, "--tiers", RB_TIERS, "--json", str(out_json), "--png", str(tmp_path / "c.png"), "--cascade")
    assert r.returncode == 0, r.stderr
    wrong = sum(row["outcomes"][local]["score"] < 0.5 for row in rows)
    assert f"local: {wrong} of 150 recorded answers fail" in r.stderr
    got = json.loads(out_json.read_text())["routers"]
    assert got["tierwise+cascade"]["aiq"] > got["tierwise"]["aiq"]


def test_train_cli_writes_artifact(slices: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "art"
    r = _cli(
        "router",
        "train",
        "--data",
        str(slices["heldout"]),
        "--tiers",
        "local=mistralai/mistral-7b-chat,frontier=gpt-4-1106-preview",
        "--out",
        str(out),
        "--encoder",
        ENCODER,
    )
    assert r.returncode == 0, r.stderr
    assert "fitting quality estimator for tier local" in r.stderr  # progress is shown
    assert load_artifact(out).tiers == ["local", "frontier"]


def test_cv_cli_pools_out_of_fold_predictions(slices: dict[str, Path], tmp_path: Path) -> None:
    out_json = tmp_path / "cv.json"
    r = _cli(
        "router",
        "cv",
        "--data",
        str(slices["train"]),
        f"{slices['mmlu']}:0.1",
        "--tiers",
        RB_TIERS,
        "--eval-tiers",
        RB_TIERS,
        "--folds",
        "3",
        "--json",
        str(out_json),
    )
    assert r.returncode == 0, r.stderr
    assert "fold 3/3" in r.stderr  # progress is shown
    got = json.loads(out_json.read_text())
    assert got["n"] == 500  # every row of the split file is judged once, out of fold
    ours, frontier = got["routers"]["tierwise"], got["routers"]["always-frontier"]
    assert ours["aiq"] is not None and frontier["cost_at_95"] == pytest.approx(1.0)
    # trained only on the other folds, it still beats always-frontier on cost at 95% quality
    assert ours["cost_at_95"] is not None and ours["cost_at_95"] < 0.9


def test_cv_by_source_holds_out_whole_subjects(slices: dict[str, Path], tmp_path: Path) -> None:
    out_json = tmp_path / "cv.json"
    mmlu_tiers = "mid=mistralai/Mixtral-8x7B-Instruct-v0.1,frontier=gpt-4-1106-preview"
    r = _cli(
        "router",
        "cv",
        "--data",
        str(slices["mmlu"]),
        str(slices["train"]),
        "--tiers",
        "local=mistralai/mistral-7b-chat,mid=mistralai/mixtral-8x7b-chat|mistralai/Mixtral-8x7B-Instruct-v0.1,"
        "frontier=gpt-4-1106-preview",
        "--eval-tiers",
        mmlu_tiers,
        "--folds",
        "4",
        "--by-source",
        "--json",
        str(out_json),
    )
    assert r.returncode == 0, r.stderr
    rows = read_rows([slices["mmlu"]])
    subjects = len({row.source for row in rows})
    unseen = [int(line.split(", ")[-1].split()[0]) for line in r.stderr.splitlines() if "sources unseen" in line]
    assert len(unseen) == 4 and sum(unseen) == subjects  # every subject is held out exactly once
    got = json.loads(out_json.read_text())
    assert got["n"] == len(rows) and got["routers"]["tierwise"]["apgr"] is not None


def test_calibrate_cli_writes_policy(small_artifact: Path, slices: dict[str, Path], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    text = (REPO / "policies" / "fake.yaml").read_text().replace("artifact: default", f"artifact: {small_artifact}")
    policy.write_text(text)
    r = _cli(
        "router",
        "calibrate",
        "--policy",
        str(policy),
        "--data",
        str(slices["heldout"]),
        "--tiers",
        RB_TIERS,
        "--frontier-share",
        "0.25",
    )
    assert r.returncode == 0, r.stderr
    assert "top-tier share" in r.stdout
    assert "written by `tierwise router calibrate`" in policy.read_text()
    assert _cli("policy", "check", str(policy)).returncode == 0


@pytest.fixture
def routed_gateway(start_gateway: GatewayFactory, default_router: Router) -> Iterator[str]:
    policy = (REPO / "policies" / "fake.yaml").read_text()
    yield start_gateway(policy, router=default_router).v1


def test_auto_route_easy_and_hard_prompts_differ(routed_gateway: str, default_router: Router) -> None:
    c = openai.OpenAI(base_url=routed_gateway, api_key="x", max_retries=0)
    # an easy science multiple-choice question (mid models get these right) vs. HARD_PROMPT
    easy_q = "Which of these is a renewable resource?\nA) coal\nB) wind\nC) oil\nD) natural gas\nAnswer:"
    hard_q = HARD_PROMPT
    easy = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": easy_q}])
    hard = c.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": hard_q}])
    tiers = ["local", "mid", "frontier"]
    e, h = easy.headers["x-tierwise-tier"], hard.headers["x-tierwise-tier"]
    assert tiers.index(e) < tiers.index(h), (e, h)
    for raw in (easy, hard):
        assert raw.headers["x-tierwise-router-version"] == default_router.version
        assert "frontier=" in raw.headers["x-tierwise-router-scores"]


def test_auto_route_weighs_the_policys_prices(start_gateway: GatewayFactory, default_router: Router) -> None:
    # At gpt-4o-mini prices the easy question goes to mid; with mid priced above the frontier the
    # same question goes to the frontier, unless the policy turns price awareness off.
    fake = (REPO / "policies" / "fake.yaml").read_text()
    mid_price = "price: {input_per_1m: 0.15, output_per_1m: 0.60}"
    assert mid_price in fake
    pricey = fake.replace(mid_price, "price: {input_per_1m: 30, output_per_1m: 120}")
    blind = pricey.replace("  target: {quality: 0.95}\n", "  target: {quality: 0.95}\n  price_aware: false\n")
    assert "price_aware" in blind
    easy_q = "Which of these is a renewable resource?\nA) coal\nB) wind\nC) oil\nD) natural gas\nAnswer:"
    chosen = []
    for policy in (fake, pricey, blind):
        gw = start_gateway(policy, router=default_router)
        raw = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": easy_q}]
        )
        chosen.append(raw.headers["x-tierwise-router-tier"])
    assert chosen == ["mid", "frontier", "mid"]


def test_auto_route_ledgers_router_fields(start_gateway: GatewayFactory, default_router: Router) -> None:
    gw = start_gateway((REPO / "policies" / "fake.yaml").read_text(), router=default_router)
    raw = openai.OpenAI(base_url=gw.v1, api_key="x").chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Which gas do plants absorb?\nA) oxygen\nB) carbon dioxide\nAnswer:"}],
    )
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert row["route"] == "auto" and row["router_tier"] == row["tier"]
    assert set(json.loads(row["router_scores"])) == {"local", "mid", "frontier"}
    assert row["router_version"] == default_router.version
    assert httpx.get(gw.url + "/readyz").json()["router"] == {"loaded": True, "version": default_router.version}


def test_router_choice_recorded_when_its_tier_is_unavailable(
    start_gateway: GatewayFactory, default_router: Router
) -> None:
    import os

    os.environ.pop("TIERWISE_TEST_ABSENT_KEY", None)
    policy = (
        (REPO / "policies" / "fake.yaml")
        .read_text()
        .replace(
            "      - name: fake-frontier\n        model: fake/echo\n",
            "      - name: fake-frontier\n        model: fake/echo\n        api_key_env: TIERWISE_TEST_ABSENT_KEY\n",
        )
    )
    gw = start_gateway(policy, router=default_router)
    raw = openai.OpenAI(base_url=gw.v1, api_key="x").chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": HARD_PROMPT}]
    )
    assert raw.headers["x-tierwise-router-tier"] == "frontier"  # what the router wanted
    assert raw.headers["x-tierwise-tier"] == "mid"  # the nearest available tier served
    row = gw.rows("request_id = ?", (raw.headers["x-tierwise-request-id"],))[0]
    assert row["router_tier"] == "frontier" and row["tier"] == "mid"
    assert "tier frontier unavailable -> mid" in json.loads(row["fallbacks"])
