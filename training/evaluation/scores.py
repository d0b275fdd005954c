"""Routers as score matrices: a bundle's, and every baseline's fitted on the training side."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routerdb.router import Router
from training.evaluation import metrics
from training.evaluation.baselines import (
    BradleyTerry,
    KNNWinRate,
    MatrixFactorization,
    PromptLength,
    RandomBaseline,
)
from training.evaluation.dataset import Side

log = logging.getLogger(__name__)

ROUTER = "routerdb"  # the router under evaluation, in every table
BT = "bradley_terry"  # the prompt-agnostic baseline every table compares with


@dataclass
class Scores:
    """A router's scores [P, M] for a side's prompts against its LLMs."""

    models: list[str]
    matrix: np.ndarray

    def diff(self, p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return metrics.pair_diff(self.matrix, self.models, p, a, b)


def bundle_scores(bundle: str | Path, prompts: list[str]) -> Scores:
    """A bundle's scores through routerdb (ONNX Runtime), as users will get them."""
    router = Router(bundle)
    return Scores(list(router.models), router.score(prompts).astype(np.float64))


def baseline_scores(train: Side, test: Side, embed, *, mf_epochs: int = 10,
                    seed: int = 0) -> dict[str, Scores]:
    """Every baseline fitted on `train`, scoring `test`'s prompts. `embed(prompts) -> [P, D]`."""
    lengths = np.array([len(p) for p in test.prompts], dtype=np.float64)
    train_emb, test_emb = embed(train.prompts), embed(test.prompts)
    fit_args = (train.p, train.a, train.b, train.label)
    models = sorted(set(train.a) | set(train.b))
    out: dict[str, Scores] = {}
    for name, baseline, emb in (
        ("random", RandomBaseline(seed), None),
        (BT, BradleyTerry(), None),
        ("prompt_length", PromptLength(), None),
        ("knn", KNNWinRate(), train_emb),
        ("matrix_factorization", MatrixFactorization(epochs=mf_epochs, seed=seed), train_emb),
    ):
        log.info("fitting baseline %s on %d pairs", name, len(train.label))
        baseline.fit(emb, *fit_args) if emb is not None else baseline.fit(None, *fit_args)
        x = test_emb if emb is not None else None
        out[name] = Scores(models, np.asarray(baseline.score(x, lengths, models), dtype=np.float64))
    return out
