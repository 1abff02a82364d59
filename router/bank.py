"""A model bank: every model of the public outcome data located in one ability space.

The shape of multidimensional item-response theory (or a logistic matrix factorisation): the
chance that model ``m`` answers prompt ``i`` well is

    P = sigmoid(b_m + (w0 + A^T theta_m) . f_i)

with ``f_i`` the router's features of the prompt, ``w0`` what makes a prompt easy for every
model, ``A`` (k x d) the k directions in which models differ on a prompt (its discrimination)
and ``theta_m`` (k numbers) and ``b_m`` the model's ability. It is fitted jointly on every
(prompt, model) outcome, so a model measured on one family of prompts still shares the
difficulty learned from all of them. A model's estimator is a plain logistic row
``(w0 + A^T theta_m, b_m)``: a tier built from the bank serves like any other.

Adaptation (``router.adapt``, method ``bank``) starts a tier from its model's ability when the
bank knows the name (aliases included), from the bank's average otherwise, and locates it from
judged samples: k + 1 numbers, so tens of samples move it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from router.data import Row
from router.estimators import F32, F64

__all__ = ["Bank", "BankError", "Outcomes", "canonical", "collect", "fit_bank", "load_bank", "save_bank"]

FILE = "bank.npz"


class BankError(Exception):
    """A bank file that cannot be trusted."""


def canonical(name: str) -> str:
    """A model name as the bank compares names: lower case, without a provider or organisation
    prefix (``openai/``, ``mistralai/``), any run of other characters than letters, digits and
    dots as one dash (``Llama-2-70b-chat`` and ``meta/llama-2-70b-chat`` are one model)."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower().rsplit("/", 1)[-1]).strip("-")


@dataclass
class Outcomes:
    """Observed outcomes: row ``i`` of ``features`` scored ``score`` for model ``model``."""

    features: F32  # (rows, d)
    row: npt.NDArray[np.int_]  # (obs,)
    model: npt.NDArray[np.int_]  # (obs,)
    score: F64  # (obs,) in [0, 1]
    weight: F64  # (obs,)
    group: npt.NDArray[np.int_]  # (obs,) which source (file) it came from


@dataclass
class Bank:
    models: list[str]  # canonical names, one per fitted model
    w0: F64
    a: F64  # (k, d)
    theta: F64  # (models, k)
    b: F64  # (models,)
    aliases: dict[str, str] = field(default_factory=dict)  # canonical alias -> bank model

    def find(self, name: str) -> int | None:
        key = canonical(name)
        key = self.aliases.get(key, key)
        return self.models.index(key) if key in self.models else None

    def ability(self, name: str | None) -> tuple[F64, float, bool]:
        """(theta, b, known): the named model's, else the bank's average."""
        i = None if name is None else self.find(name)
        if i is None:
            return self.theta.mean(axis=0), float(self.b.mean()), False
        return self.theta[i].copy(), float(self.b[i]), True

    def estimator(self, theta: F64, b: float) -> tuple[F64, float]:
        """The logistic row (weights, bias) of a model with this ability."""
        w: F64 = self.w0 + self.a.T @ theta
        return w, b

    def probability(self, features: F32, name: str) -> F64:
        w, b = self.estimator(*self.ability(name)[:2])
        out: F64 = 1.0 / (1.0 + np.exp(-(features.astype(np.float64) @ w + b)))
        return out


def collect(
    parts: Sequence[tuple[Sequence[Row], F32, float]], aliases: Mapping[str, str] | None = None
) -> tuple[Outcomes, list[str]]:
    """Every (prompt, model) outcome of ``parts`` (rows, their features, a weight), models named
    canonically and merged through ``aliases`` (canonical name -> the bank's name for it)."""
    alias = dict(aliases or {})
    models: dict[str, int] = {}
    rows, obs_model, scores, weights, groups = [], [], [], [], []
    offset = 0
    for group, (part_rows, _, weight) in enumerate(parts):
        for i, row in enumerate(part_rows):
            for name, score in row.scores.items():
                key = canonical(name)
                key = alias.get(key, key)
                rows.append(offset + i)
                obs_model.append(models.setdefault(key, len(models)))
                scores.append(min(1.0, max(0.0, score)))
                weights.append(weight)
                groups.append(group)
        offset += len(part_rows)
    features = np.vstack([f for _, f, _ in parts]).astype(np.float32)
    data = Outcomes(
        features, np.array(rows), np.array(obs_model), np.array(scores), np.array(weights, np.float64), np.array(groups)
    )
    return data, list(models)


def fit_bank(
    data: Outcomes,
    models: Sequence[str],
    *,
    k: int = 8,
    l2: float = 1.0 / 0.3,
    seed: int = 0,
    max_iter: int = 500,
    aliases: Mapping[str, str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Bank:
    """Fit the bank by L-BFGS on the weighted log-loss, with an L2 penalty of ``l2`` on w0, A and
    theta (``router train``'s strength; the biases are free). Deterministic for a seed.

    Each source but the first has an offset of its own (its graders' leniency: a 7/10 rating is
    not a correct multiple-choice answer), fitted and dropped, so every model's ``b`` is on the
    first source's scale and models measured on different sources compare."""
    from scipy.optimize import minimize  # noqa: PLC0415 - only when building
    from scipy.special import expit  # noqa: PLC0415

    x = data.features.astype(np.float64)
    n, d = x.shape
    m = len(models)
    s, w, ri, mi, gi = data.score, data.weight, data.row, data.model, data.group
    groups = int(gi.max()) + 1
    total = float(w.sum())
    rng = np.random.default_rng(seed)
    sizes = (d, k * d, m * k, m, groups - 1)
    cuts = np.cumsum(sizes)[:-1]
    start = np.concatenate(
        [np.zeros(d), rng.normal(0, 0.01, k * d), rng.normal(0, 0.01, m * k), np.zeros(m), np.zeros(groups - 1)]
    )

    def unpack(p: F64) -> tuple[F64, F64, F64, F64, F64]:
        w0, a, theta, b, c = np.split(p, cuts)
        return w0, a.reshape(k, d), theta.reshape(m, k), b, np.append(0.0, c)

    def objective(p: F64) -> tuple[float, F64]:
        w0, a, theta, b, c = unpack(p)
        g = x @ a.T  # (n, k): each prompt in the ability space
        z = b[mi] + c[gi] + (x @ w0)[ri] + np.einsum("ok,ok->o", g[ri], theta[mi])
        loss = float(np.sum(w * (np.logaddexp(0.0, z) - s * z))) / total
        r = w * (expit(z) - s) / total
        per_row = np.bincount(ri, r, minlength=n)
        grad_w0 = x.T @ per_row
        pulled = np.zeros((n, k))
        np.add.at(pulled, ri, r[:, None] * theta[mi])
        grad_a = pulled.T @ x
        grad_theta = np.zeros((m, k))
        np.add.at(grad_theta, mi, r[:, None] * g[ri])
        grad_b = np.bincount(mi, r, minlength=m)
        grad_c = np.bincount(gi, r, minlength=groups)[1:]
        reg = l2 / total
        loss += 0.5 * reg * float(w0 @ w0 + np.sum(a * a) + np.sum(theta * theta))
        grad = np.concatenate(
            [grad_w0 + reg * w0, (grad_a + reg * a).ravel(), (grad_theta + reg * theta).ravel(), grad_b, grad_c]
        )
        return loss, grad

    progress(f"fitting the bank: {m} models, {len(s)} outcomes on {n} prompts, {k} ability dimensions")
    res = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    w0, a, theta, b, _ = unpack(res.x)
    progress(f"bank fitted: loss {res.fun:.4f} after {res.nit} iterations")
    return Bank(list(models), w0.copy(), a.copy(), theta.copy(), b.copy(), dict(aliases or {}))


def save_bank(bank: Bank, out: Path) -> dict[str, object]:
    """Write ``bank.npz`` into an artifact directory; returns what its meta records."""
    path = out / FILE
    with path.open("wb") as fh:
        np.savez(fh, w0=bank.w0, a=bank.a, theta=bank.theta, b=bank.b)
    return {
        "file": FILE,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "models": bank.models,
        "aliases": bank.aliases,
        "dimensions": int(bank.a.shape[0]),
    }


def load_bank(directory: Path, meta: Mapping[str, object]) -> Bank:
    """The bank an artifact's meta names, checked against its checksum and shapes."""
    info = meta.get("bank")
    if not isinstance(info, dict):
        raise BankError(f"{directory}: this artifact has no model bank (rebuild it with `make router-artifact`)")
    path = directory / str(info["file"])
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != info.get("sha256"):
        raise BankError(f"{path}: missing or checksum mismatch; refusing it")
    with np.load(path, allow_pickle=False) as z:
        w0, a, theta, b = (np.asarray(z[key], np.float64) for key in ("w0", "a", "theta", "b"))
    models = [str(x) for x in info["models"]]
    k, d = a.shape
    if w0.shape != (d,) or theta.shape != (len(models), k) or b.shape != (len(models),):
        raise BankError(f"{path}: arrays do not fit {len(models)} models of {k} dimensions")
    aliases = {str(x): str(y) for x, y in dict(info.get("aliases") or {}).items()}
    return Bank(models, w0, a, theta, b, aliases)
