"""Priors the model needs from the training pairs, numpy only (no torch): Bradley-Terry strengths.

`bradley_terry_strengths` is one strength per LLM, ignoring the prompt (P(a beats b) =
sigmoid(theta_a - theta_b)); the IRT head's `bradley_terry_level` puts its measured levels on them,
phase-1 LLM embeddings carry them, and `training.evaluation.baselines.BradleyTerry` is the same fit
as a baseline router.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bradley_terry_strengths(model_a: Sequence[str], model_b: Sequence[str], label: Sequence[int], *,
                            ties: str = "ignore", l2: float = 1.0) -> dict[str, float]:
    """{LLM: strength} (log-odds scale, mean 0) fitted on pairs `model_a` vs `model_b` with `label`
    +1 (a better), -1 (b better) or 0 (a tie: dropped, or half a win each with ties="half")."""
    a, b, y = np.asarray(model_a).astype(str), np.asarray(model_b).astype(str), np.asarray(label)
    names, code = np.unique(np.concatenate([a, b]), return_inverse=True)
    code_a, code_b = np.split(code, 2)
    w, loss, weight = winner_loser(code_a, code_b, y.astype(np.int64), ties)
    theta = fit_bradley_terry(w, loss, weight, len(names), l2)
    return dict(zip(names.tolist(), theta.tolist(), strict=True))


def winner_loser(a, b, y, ties: str):
    """Orient pairs as (winner, loser, weight); with ties="half" a tie is half a win each way."""
    win = y > 0
    w, loss = np.where(win, a, b)[y != 0], np.where(win, b, a)[y != 0]
    weight = np.ones(w.size)
    if ties == "half":
        tie = y == 0
        w = np.concatenate([w, a[tie], b[tie]])
        loss = np.concatenate([loss, b[tie], a[tie]])
        weight = np.concatenate([weight, np.full(2 * tie.sum(), 0.5)])
    return w, loss, weight


def _objective(theta, w, loss, weight, l2):
    return np.sum(weight * np.logaddexp(0.0, theta[loss] - theta[w])) + l2 / 2 * theta @ theta


def fit_bradley_terry(w, loss, weight, n_models: int, l2: float, max_iter: int = 100):
    """Damped Newton on the L2-penalised Bradley-Terry log-likelihood; returns theta [M].

    The penalty makes the problem strictly convex and, as the likelihood ignores a shift of
    all strengths, puts the optimum at mean(theta) == 0.
    """
    theta = np.zeros(n_models)
    value = _objective(theta, w, loss, weight, l2)
    for _ in range(max_iter):
        p_loss = np.exp(-np.logaddexp(0.0, theta[w] - theta[loss]))  # P(loser wins)
        g = l2 * theta
        np.add.at(g, w, -weight * p_loss)
        np.add.at(g, loss, weight * p_loss)
        h = weight * p_loss * (1.0 - p_loss)
        hess = l2 * np.eye(n_models)
        np.add.at(hess, (w, w), h)
        np.add.at(hess, (loss, loss), h)
        np.add.at(hess, (w, loss), -h)
        np.add.at(hess, (loss, w), -h)
        step = np.linalg.solve(hess, g)
        t = 1.0
        while (new := _objective(theta - t * step, w, loss, weight, l2)) > value and t > 1e-8:
            t /= 2  # backtracking keeps every step a descent step
        theta, value = theta - t * step, new
        if np.max(np.abs(t * step)) < 1e-10:
            break
    return theta
