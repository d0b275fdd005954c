"""Pairwise accuracy of score matrices on a test side: per source and pooled, with intervals that
resample near-duplicate prompt groups, the paired difference to Bradley-Terry, log-loss,
calibration, the per-LLM-pair table and the prompt-shuffle check."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.evaluation import metrics
from training.evaluation.dataset import Side
from training.evaluation.metrics import boot_weights, ratio_ci
from training.evaluation.scores import BT, Scores


def common_rows(test: Side, routers: dict[str, Scores]) -> np.ndarray:
    """Rows whose two LLMs every router can score."""
    keep = np.ones(len(test.label), bool)
    for scores in routers.values():
        known = set(scores.models)
        keep &= np.array([x in known and y in known for x, y in zip(test.a, test.b, strict=True)], dtype=bool)
    return keep


def credit(diff: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per decisive pair: 1 ranked right, 0.5 equal scores, 0 wrong (pairwise_accuracy's terms)."""
    signed = diff * label
    return np.where(signed > 0, 1.0, np.where(signed == 0, 0.5, 0.0))


def shuffled_prompts(p: np.ndarray, source: np.ndarray, seed: int) -> np.ndarray:
    """Each row's prompt replaced by a random other test prompt of the same source."""
    rng = np.random.default_rng(seed)
    out = p.copy()
    for src in np.unique(source):
        rows = source == src
        uniq = np.unique(p[rows])
        perm = dict(zip(uniq.tolist(), rng.permutation(uniq).tolist(), strict=True))
        out[rows] = [perm[x] for x in p[rows].tolist()]
    return out


def pair_metrics(test: Side, routers: dict[str, Scores], *, n_boot: int = 1000, seed: int = 0,
                 shuffle_seeds: Sequence[int] = (0, 1, 2)) -> dict:
    """Accuracy, intervals, log-loss, ECE and the shuffle check per source and pooled."""
    decisive = test.label != 0
    t = test.take(decisive)
    diffs = {n: s.diff(t.p, t.a, t.b) for n, s in routers.items()}
    shuffled = {n: np.mean([credit(s.diff(shuffled_prompts(t.p, t.source, k), t.a, t.b), t.label)
                            for k in shuffle_seeds], axis=0) for n, s in routers.items()}
    out = {}
    for scope in ["pooled", *sorted(np.unique(t.source))]:
        rows = np.ones(len(t.label), bool) if scope == "pooled" else t.source == scope
        if not rows.any():
            continue
        code, draws = boot_weights(t.group[rows], n_boot, seed)
        ref = credit(diffs[BT][rows], t.label[rows]) if BT in diffs else None
        entry = {"n_pairs": int(rows.sum()), "n_prompts": int(len(np.unique(t.p[rows]))),
                 "n_ties": int(np.sum((test.label == 0) & ((test.source == scope) | (scope == "pooled")))),
                 "routers": {}}
        for name, diff in diffs.items():
            c = credit(diff[rows], t.label[rows])
            r = {"accuracy": float(c.mean()), "ci": ratio_ci(c, code, draws),
                 "log_loss": metrics.log_loss(diff[rows], t.label[rows]),
                 "ece": metrics.expected_calibration_error(diff[rows], t.label[rows]),
                 "shuffled_accuracy": float(shuffled[name][rows].mean())}
            r["shuffle_drop"] = r["accuracy"] - r["shuffled_accuracy"]
            if ref is not None:
                r["minus_bt"] = float(c.mean() - ref.mean())
                r["minus_bt_ci"] = ratio_ci(c - ref, code, draws)
            entry["routers"][name] = r
        out[scope] = entry
    return out


def calibration_tables(test: Side, routers: dict[str, Scores]) -> dict[str, list]:
    t = test.take(test.label != 0)
    return {n: metrics.calibration(s.diff(t.p, t.a, t.b), t.label) for n, s in routers.items()}


def per_pair_rows(test: Side, routers: dict[str, Scores]) -> list[dict]:
    rows = None
    for name, scores in routers.items():
        table = metrics.per_pair_table(test.a, test.b, scores.diff(test.p, test.a, test.b), test.label)
        if rows is None:
            rows = [{k: r[k] for k in ("model_a", "model_b", "n", "ties")} for r in table]
        for row, r in zip(rows, table, strict=True):
            row[name] = r["accuracy"]
    return sorted(rows or [], key=lambda r: -r["n"])
