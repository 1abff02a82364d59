"""The model bank and adaptation from it, on synthetic outcomes whose abilities are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.adapt import JudgedSamples, adapt
from router.artifact import Artifact
from router.bank import Bank, BankError, canonical, collect, fit_bank, load_bank, save_bank
from router.data import Row
from router.estimators import TierModels

D = 6
# Three directions in which prompts differ; each model is good along some of them.
TRUE = {
    "vendor/Strong-Model-v1": np.array([2.0, 2.0, 0.5]),
    "maths-7b": np.array([2.5, -1.5, -0.5]),
    "chatty-7b": np.array([-1.5, 2.5, -0.5]),
    "weak-1b": np.array([-1.0, -1.0, -1.5]),
}


def _world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    mix = rng.normal(size=(3, D)) / np.sqrt(D)
    return x, mix


def _p(x: np.ndarray, mix: np.ndarray, ability: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1 / (1 + np.exp(-(x @ mix.T @ ability)))
    return out


@pytest.fixture(scope="module")
def world() -> tuple[np.ndarray, np.ndarray, Bank]:
    x, mix = _world(1500, 0)
    rows = [
        Row(f"r{i}", "synthetic", "", {m: float(_p(x[i : i + 1], mix, a)[0]) for m, a in TRUE.items()}, {})
        for i in range(len(x))
    ]
    data, models = collect([(rows, x, 1.0)], {"strong-model": "strong-model-v1"})
    return x, mix, fit_bank(data, models, k=3, l2=1.0, aliases={"strong-model": "strong-model-v1"})


def test_names_are_compared_canonically_and_through_aliases(world: tuple[np.ndarray, np.ndarray, Bank]) -> None:
    bank = world[2]
    assert canonical("openai/GPT-4-1106-Preview") == "gpt-4-1106-preview"
    assert bank.find("other-vendor/strong-model-v1") == bank.find("Strong-Model") == 0
    assert bank.find("maths-7b") is not None and bank.find("unknown-13b") is None
    theta, b, known = bank.ability("unknown-13b")
    assert not known and np.allclose(theta, bank.theta.mean(axis=0)) and b == pytest.approx(bank.b.mean())


def test_the_bank_recovers_who_is_good_at_what(world: tuple[np.ndarray, np.ndarray, Bank]) -> None:
    _, mix, bank = world
    test_x, _ = _world(500, 1)
    for model, ability in TRUE.items():
        truth, got = _p(test_x, mix, ability), bank.probability(test_x, model)
        assert np.corrcoef(truth, got)[0, 1] > 0.9, model
    # where the specialists part ways, the bank knows which is which
    maths = test_x @ mix.T @ (TRUE["maths-7b"] - TRUE["chatty-7b"]) > 2
    assert (bank.probability(test_x[maths], "maths-7b") > bank.probability(test_x[maths], "chatty-7b")).mean() > 0.9


def test_saved_bank_round_trips_and_a_modified_one_is_refused(
    world: tuple[np.ndarray, np.ndarray, Bank], tmp_path: Path
) -> None:
    bank = world[2]
    meta = {"bank": save_bank(bank, tmp_path)}
    back = load_bank(tmp_path, meta)
    assert back.models == bank.models and back.aliases == bank.aliases
    np.testing.assert_array_equal(back.a, bank.a)
    (tmp_path / "bank.npz").write_bytes((tmp_path / "bank.npz").read_bytes() + b"\0")
    with pytest.raises(BankError, match="checksum"):
        load_bank(tmp_path, meta)
    with pytest.raises(BankError, match="no model bank"):
        load_bank(tmp_path, {})


def _base(d: int) -> Artifact:
    zeros = np.zeros((2, d), np.float32)
    models = TierModels(
        ["mid", "frontier"], zeros, np.zeros(2, np.float32), zeros.copy(), np.array([-3.0, 0.0], np.float32)
    )
    return Artifact(models=models, encoder="synthetic", max_chars=1000, meta={"cost_weight": 0.3})


def test_a_known_model_starts_from_its_ability_and_an_unknown_one_is_located(
    world: tuple[np.ndarray, np.ndarray, Bank],
) -> None:
    x, mix, bank = world
    test_x, _ = _world(500, 2)
    # No samples: a named tier is the bank's estimate of that model already.
    none = JudgedSamples(x[:0], np.zeros((0, 2)))
    a = adapt(_base(D), ["mid", "frontier"], none, method="bank", bank=bank, models=["chatty-7b", "strong-model"])
    np.testing.assert_allclose(a.models.quality(test_x)[:, 0], bank.probability(test_x, "chatty-7b"), rtol=1e-4)
    assert a.meta["adapted_from"]["quality"]["mid"]["source"] == "bank: its ability"

    # A model the bank has never seen, behaving like the maths specialist: 15 judged samples
    # (too few for a correction of every weight) locate its ability near where it belongs.
    rng = np.random.default_rng(3)
    idx = rng.permutation(len(x))[:15]
    verdicts = (rng.random(15) < _p(x[idx], mix, TRUE["maths-7b"])).astype(float)
    samples = JudgedSamples(x[idx], np.column_stack([verdicts, np.ones(15)]))
    located = adapt(_base(D), ["mid", "frontier"], samples, method="bank", bank=bank, models=["newcomer-7b", None])
    truth = _p(test_x, mix, TRUE["maths-7b"])
    start = 1 / (1 + np.exp(-(test_x @ bank.estimator(*bank.ability(None)[:2])[0] + bank.b.mean())))
    after = located.models.quality(test_x)[:, 0]
    assert np.corrcoef(truth, after)[0, 1] > np.corrcoef(truth, start)[0, 1] + 0.2
    assert located.meta["adapted_from"]["quality"]["mid"]["source"].startswith("bank: the average")


def test_an_unknown_model_starts_where_the_bases_tier_of_its_rank_stands(
    world: tuple[np.ndarray, np.ndarray, Bank],
) -> None:
    _, _, bank = world
    test_x, _ = _world(200, 6)
    base = _base(D)
    base.meta["tier_models"] = {"mid": ["not-in-the-bank", "maths-7b"], "frontier": ["vendor/strong-model-v1"]}
    none = JudgedSamples(test_x[:0], np.zeros((0, 2)))
    a = adapt(base, ["cheap", "best"], none, method="bank", bank=bank, models=["brand-new-8b", None])
    np.testing.assert_allclose(a.models.quality(test_x)[:, 0], bank.probability(test_x, "maths-7b"), rtol=1e-4)
    assert a.meta["adapted_from"]["quality"]["cheap"]["source"].startswith("bank: maths-7b's ability")


def test_the_bank_method_needs_a_bank_on_the_same_features(world: tuple[np.ndarray, np.ndarray, Bank]) -> None:
    samples = JudgedSamples(np.zeros((5, D + 1), np.float32), np.ones((5, 2)))
    with pytest.raises(ValueError, match="needs the base artifact's model bank"):
        adapt(_base(D + 1), ["mid", "frontier"], samples, method="bank")
    with pytest.raises(ValueError, match="other features"):
        adapt(_base(D + 1), ["mid", "frontier"], samples, method="bank", bank=world[2])


def test_a_lenient_source_does_not_flatter_the_models_it_measured() -> None:
    # Source 2's graders pass everything more easily (+2 logits). "twin-b" is measured only
    # there, "twin-a" only on source 1; they are equally able, and the bank should say so.
    x, mix = _world(1200, 4)
    ability = np.array([0.5, 0.5, 0.0])
    rng = np.random.default_rng(5)
    parts = []
    for source, (lo, hi, lenient, twin) in enumerate(((0, 600, 0.0, "twin-a"), (600, 1200, 2.0, "twin-b"))):
        rows = []
        for i in range(lo, hi):
            logit = float(x[i] @ mix.T @ ability)
            scores = {twin: float(rng.random() < 1 / (1 + np.exp(-(logit + lenient))))}
            scores["anchor"] = float(rng.random() < 1 / (1 + np.exp(-(logit + 1.0 + lenient))))
            rows.append(Row(f"{source}/{i}", f"s{source}", "", scores, {}))
        parts.append((rows, x[lo:hi], 1.0))
    data, models = collect(parts)
    bank = fit_bank(data, models, k=2, l2=1.0)
    gap = bank.b[bank.find("twin-b")] - bank.b[bank.find("twin-a")]
    assert abs(gap) < 0.5, gap  # without the source's offset it is ~2
