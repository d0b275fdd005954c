"""Reference routers to measure the learned router against. numpy only, no torch import.

Every baseline has the same two methods (the `Baseline` protocol):

``fit(prompt_emb, prompt_idx, model_a, model_b, label) -> self``
    ``prompt_emb``  [P_train, D] frozen prompt embeddings, or None for the baselines that ignore
                    the prompt; rows are L2-normalised here, so any scale is fine.
    ``prompt_idx``  [N] int, the ``prompt_emb`` row of each training pair (None where unused).
    ``model_a``, ``model_b``  [N] LLM names; ``label`` [N] in {+1 a better, -1 b better, 0 tie}.

``score(prompt_emb, prompt_lengths, models) -> np.ndarray [P, M]``
    ``prompt_emb``  [P, D] embeddings of the prompts to score, or None;
    ``prompt_lengths``  [P] positive prompt lengths (characters or tokens), or None;
    ``models``  the M LLM names, each seen in training (else a KeyError listing the known ones).
    At least one of the two prompt inputs must be given; it fixes P. A pair's router output is
    ``diff = scores[p, a] - scores[p, b]`` (``training.evaluation.metrics.pair_diff``), on a log-odds scale
    for every baseline except `RandomBaseline`.

Ties (label 0) are ignored when fitting, except by ``BradleyTerry(ties="half")``.
`BASELINES` maps a kind name to each class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from training.model.priors import fit_bradley_terry, winner_loser

__all__ = [
    "BASELINES",
    "Baseline",
    "BradleyTerry",
    "KNNWinRate",
    "MatrixFactorization",
    "PromptLength",
    "RandomBaseline",
]


class Baseline(Protocol):
    def fit(
        self,
        prompt_emb: np.ndarray | None,
        prompt_idx: np.ndarray | None,
        model_a: np.ndarray,
        model_b: np.ndarray,
        label: np.ndarray,
    ) -> Baseline: ...

    def score(
        self,
        prompt_emb: np.ndarray | None,
        prompt_lengths: np.ndarray | None,
        models: Sequence[str],
    ) -> np.ndarray: ...


# --- shared plumbing ------------------------------------------------------------------------


def _normalise(emb: np.ndarray, name: str) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"{name} has shape {emb.shape}; need [prompts, dim]")
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norm > 0, norm, 1.0)


class _PairBaseline:
    """LLM vocabulary and input checks shared by the baselines."""

    models_: list[str]

    def _encode(self, prompt_idx, model_a, model_b, label):
        """Set ``models_``; return (prompt [N] or None, a [N], b [N], y [N]) as integer arrays."""
        a, b = np.asarray(model_a).astype(str), np.asarray(model_b).astype(str)
        y = np.asarray(label)
        if not a.shape == b.shape == y.shape or a.ndim != 1:
            raise ValueError(
                f"model_a {a.shape}, model_b {b.shape}, label {y.shape}: need one value per pair"
            )
        bad = np.setdiff1d(np.unique(y), [-1, 0, 1])
        if bad.size:
            raise ValueError(f"label has values {bad.tolist()}; allowed are +1, -1 and 0 (tie)")
        if not np.any(y != 0):
            raise ValueError(f"{type(self).__name__} needs decisive pairs; all {y.size} are ties")
        names, code = np.unique(np.concatenate([a, b]), return_inverse=True)
        self.models_ = names.tolist()
        prompt = None if prompt_idx is None else np.asarray(prompt_idx, dtype=np.int64)
        if prompt is not None and prompt.shape != y.shape:
            raise ValueError(f"prompt_idx has shape {prompt.shape}; need {y.shape}, one per pair")
        code_a, code_b = np.split(code, 2)
        return prompt, code_a, code_b, y.astype(np.int64)

    def _columns(self, models: Sequence[str]) -> np.ndarray:
        known = getattr(self, "models_", None)
        if known is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call .fit(...) first")
        column = {m: j for j, m in enumerate(known)}
        unknown = [m for m in models if m not in column]
        if unknown:
            raise KeyError(
                f"{type(self).__name__} never saw models {unknown} in training; "
                f"it can score {known}. Refit with pairs that include them."
            )
        return np.array([column[m] for m in models], dtype=np.int64)

    @staticmethod
    def _n_prompts(prompt_emb, prompt_lengths) -> int:
        sizes = {len(x) for x in (prompt_emb, prompt_lengths) if x is not None}
        if not sizes:
            raise ValueError("pass prompt_emb or prompt_lengths so the number of prompts is known")
        if len(sizes) > 1:
            raise ValueError(f"prompt_emb and prompt_lengths disagree on prompt count: {sizes}")
        return sizes.pop()


def _prompt_rows(prompt_emb, prompt, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalised training embeddings and checked per-pair row indices."""
    if prompt_emb is None or prompt is None:
        raise ValueError(f"{who} needs prompt_emb and prompt_idx to fit; got None")
    emb = _normalise(prompt_emb, "prompt_emb")
    if prompt.size and (prompt.min() < 0 or prompt.max() >= emb.shape[0]):
        raise ValueError(
            f"prompt_idx spans [{prompt.min()}, {prompt.max()}] but prompt_emb has "
            f"{emb.shape[0]} rows; each index must be a row of prompt_emb"
        )
    return emb, prompt


# --- the baselines --------------------------------------------------------------------------


class RandomBaseline(_PairBaseline):
    """Uniform random scores in [0, 1); the same seed and prompt count give the same matrix."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, prompt_emb, prompt_idx, model_a, model_b, label) -> RandomBaseline:
        self._encode(prompt_idx, model_a, model_b, label)
        return self

    def score(self, prompt_emb, prompt_lengths, models) -> np.ndarray:
        cols = self._columns(models)
        rng = np.random.default_rng(self.seed)
        full = rng.random((self._n_prompts(prompt_emb, prompt_lengths), len(self.models_)))
        return full[:, cols]


class BradleyTerry(_PairBaseline):
    """One strength per LLM, ignoring the prompt: P(a beats b) = sigmoid(theta_a - theta_b).

    Fitted by Newton's method on the log-likelihood with an L2 penalty ``l2/2 * |theta|^2``
    (a N(0, 1/l2) prior; it shrinks rarely-seen LLMs toward the mean). ``ties="ignore"`` drops
    ties; ``ties="half"`` counts a tie as half a win for each side.
    """

    def __init__(self, l2: float = 1.0, ties: str = "ignore"):
        if ties not in ("ignore", "half"):
            raise ValueError(f"ties={ties!r}; allowed are 'ignore' and 'half'")
        if l2 <= 0:
            raise ValueError(f"l2={l2}; need > 0 so that the strengths are identified")
        self.l2, self.ties = l2, ties

    def fit(self, prompt_emb, prompt_idx, model_a, model_b, label) -> BradleyTerry:
        _, a, b, y = self._encode(prompt_idx, model_a, model_b, label)
        w, loss, weight = winner_loser(a, b, y, self.ties)
        self.theta_ = fit_bradley_terry(w, loss, weight, len(self.models_), self.l2)
        return self

    @property
    def strengths(self) -> dict[str, float]:
        return dict(zip(self.models_, self.theta_.tolist(), strict=True))

    def score(self, prompt_emb, prompt_lengths, models) -> np.ndarray:
        cols = self._columns(models)
        n = self._n_prompts(prompt_emb, prompt_lengths)
        return np.broadcast_to(self.theta_[cols], (n, cols.size)).copy()


class PromptLength(_PairBaseline):
    """Longer prompts go to stronger LLMs: ``s(p, m) = (theta_m - mean theta) * log1p(len_p)``.

    ``theta`` are Bradley-Terry strengths fitted on the pairs, so only which LLM is stronger
    comes from training; for a strong / weak pair the diff grows with prompt length and the
    routing curve ranks prompts by length. Needs ``prompt_lengths`` at score time.
    """

    def __init__(self, l2: float = 1.0):
        self.l2 = l2

    def fit(self, prompt_emb, prompt_idx, model_a, model_b, label) -> PromptLength:
        self._bt = BradleyTerry(l2=self.l2).fit(None, None, model_a, model_b, label)
        self.models_ = self._bt.models_
        return self

    def score(self, prompt_emb, prompt_lengths, models) -> np.ndarray:
        cols = self._columns(models)
        if prompt_lengths is None:
            raise ValueError("PromptLength scores from prompt_lengths; got None")
        lengths = np.asarray(prompt_lengths, dtype=np.float64)
        if lengths.ndim != 1 or np.any(lengths < 0):
            raise ValueError(f"prompt_lengths must be [P] and >= 0; got shape {lengths.shape}")
        theta = self._bt.theta_ - self._bt.theta_.mean()
        return np.log1p(lengths)[:, None] * theta[cols][None, :]


class KNNWinRate(_PairBaseline):
    """Each LLM's win rate on the k training prompts most similar (cosine) to the test prompt.

    Only training prompts with at least one decisive pair are neighbours. With ``w`` wins in
    ``n`` decisive comparisons there, the rate is smoothed toward the LLM's global win rate
    ``g`` as ``(w + prior * g) / (n + prior)``: ``prior`` pseudo-comparisons at the global rate,
    so an LLM rarely seen near the prompt falls back to its global rate. ``g`` itself is
    ``(W + 1) / (N + 2)`` over all training pairs. The score is the logit of the rate.
    """

    def __init__(self, k: int = 20, prior: float = 5.0, batch: int = 1024):
        if k < 1 or prior <= 0:
            raise ValueError(f"k={k}, prior={prior}; need k >= 1 and prior > 0")
        self.k, self.prior, self.batch = k, prior, batch

    def fit(self, prompt_emb, prompt_idx, model_a, model_b, label) -> KNNWinRate:
        prompt, a, b, y = self._encode(prompt_idx, model_a, model_b, label)
        emb, prompt = _prompt_rows(prompt_emb, prompt, "KNNWinRate")
        keep = y != 0
        prompt, a, b, y = prompt[keep], a[keep], b[keep], y[keep]
        wins = np.zeros((emb.shape[0], len(self.models_)))  # [P_train, M]
        games = np.zeros_like(wins)
        np.add.at(wins, (prompt, np.where(y > 0, a, b)), 1.0)
        np.add.at(games, (prompt, a), 1.0)
        np.add.at(games, (prompt, b), 1.0)
        used = games.sum(axis=1) > 0
        self._emb, self._wins, self._games = emb[used], wins[used], games[used]
        self._global = (wins.sum(axis=0) + 1.0) / (games.sum(axis=0) + 2.0)
        return self

    def score(self, prompt_emb, prompt_lengths, models) -> np.ndarray:
        cols = self._columns(models)
        if prompt_emb is None:
            raise ValueError("KNNWinRate scores from prompt_emb; got None")
        emb = _normalise(prompt_emb, "prompt_emb")
        k = min(self.k, self._emb.shape[0])
        out = np.empty((emb.shape[0], cols.size))
        for start in range(0, emb.shape[0], self.batch):
            sim = emb[start : start + self.batch] @ self._emb.T  # [B, P_train]
            nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # [B, k]
            w = self._wins[nearest].sum(axis=1)[:, cols]  # [B, M]
            n = self._games[nearest].sum(axis=1)[:, cols]
            rate = (w + self.prior * self._global[cols]) / (n + self.prior)
            out[start : start + self.batch] = np.log(rate) - np.log1p(-rate)
        return out


class MatrixFactorization(_PairBaseline):
    """RouteLLM-style bilinear router: ``s(p, m) = (W e_p) . v_m + b_m``.

    Trained on decisive pairs with the Bradley-Terry loss ``-log sigmoid(s_winner - s_loser)``,
    Adam with decoupled weight decay on W and v, mini-batches, seeded; numpy gradients.
    """

    def __init__(
        self,
        dim: int = 64,  # width of the shared prompt / model space
        epochs: int = 30,  # passes over the decisive pairs
        lr: float = 3e-3,  # Adam step size
        batch_size: int = 256,  # pairs per step
        weight_decay: float = 1e-4,  # decoupled, on W and v (not the biases)
        seed: int = 0,  # initialisation and batch order
    ):
        self.dim, self.epochs, self.lr = dim, epochs, lr
        self.batch_size, self.weight_decay, self.seed = batch_size, weight_decay, seed

    def fit(self, prompt_emb, prompt_idx, model_a, model_b, label) -> MatrixFactorization:
        prompt, a, b, y = self._encode(prompt_idx, model_a, model_b, label)
        emb, prompt = _prompt_rows(prompt_emb, prompt, "MatrixFactorization")
        keep = y != 0
        prompt = prompt[keep]
        w, loss = np.where(y > 0, a, b)[keep], np.where(y > 0, b, a)[keep]
        rng = np.random.default_rng(self.seed)
        m, d = len(self.models_), emb.shape[1]
        self.params_ = {
            "W": rng.normal(0.0, 1.0 / np.sqrt(self.dim), (self.dim, d)),  # |W e| ~ 1
            "v": rng.normal(0.0, 0.1, (m, self.dim)),
            "b": np.zeros(m),
        }
        adam = _Adam(self.params_, self.lr, self.weight_decay, decay={"W", "v"})
        for _ in range(self.epochs):
            for batch in np.array_split(rng.permutation(w.size), max(1, w.size // self.batch_size)):
                grads = self._grads(emb[prompt[batch]], w[batch], loss[batch])
                adam.step(grads)
        return self

    def _grads(self, e: np.ndarray, w: np.ndarray, loss: np.ndarray) -> dict[str, np.ndarray]:
        p = self.params_
        u = e @ p["W"].T  # [B, dim]
        dv = p["v"][w] - p["v"][loss]  # [B, dim]
        z = np.sum(u * dv, axis=1) + p["b"][w] - p["b"][loss]  # [B]
        g = -np.exp(-np.logaddexp(0.0, z)) / w.size  # d mean softplus(-z) / dz
        grad_v = np.zeros_like(p["v"])
        np.add.at(grad_v, w, g[:, None] * u)
        np.add.at(grad_v, loss, -g[:, None] * u)
        grad_b = np.zeros_like(p["b"])
        np.add.at(grad_b, w, g)
        np.add.at(grad_b, loss, -g)
        return {"W": (g[:, None] * dv).T @ e, "v": grad_v, "b": grad_b}

    def score(self, prompt_emb, prompt_lengths, models) -> np.ndarray:
        cols = self._columns(models)
        if prompt_emb is None:
            raise ValueError("MatrixFactorization scores from prompt_emb; got None")
        emb = _normalise(prompt_emb, "prompt_emb")
        p = self.params_
        if emb.shape[1] != p["W"].shape[1]:
            raise ValueError(
                f"prompt_emb has dim {emb.shape[1]}; the model was fitted on dim {p['W'].shape[1]}"
            )
        return (emb @ p["W"].T) @ p["v"][cols].T + p["b"][cols]


class _Adam:
    """Adam with decoupled weight decay over a dict of numpy arrays, updated in place."""

    def __init__(self, params, lr, weight_decay, decay, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.wd, self.decay = params, lr, weight_decay, decay
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.betas
        for k, g in grads.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat, v_hat = self.m[k] / (1 - b1**self.t), self.v[k] / (1 - b2**self.t)
            if k in self.decay:
                self.params[k] *= 1 - self.lr * self.wd
            self.params[k] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


BASELINES: dict[str, type[_PairBaseline]] = {
    "random": RandomBaseline,
    "bradley_terry": BradleyTerry,
    "prompt_length": PromptLength,
    "knn_win_rate": KNNWinRate,
    "matrix_factorization": MatrixFactorization,
}
