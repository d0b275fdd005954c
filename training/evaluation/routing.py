"""Routing between a strong and a weak LLM (routing curves, APGR, CPT) and quality versus cost,
on the per-model scores of a test side."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from training.evaluation import metrics
from training.evaluation.dataset import Side
from training.evaluation.scores import Scores

log = logging.getLogger(__name__)


def strong_weak(test: Side, strong: str, weak: str):
    """(prompt index, strong quality, weak quality) for test prompts where both were scored."""
    fwd = (test.a == strong) & (test.b == weak)
    rev = (test.a == weak) & (test.b == strong)
    rows = (fwd | rev) & np.isfinite(test.score_a) & np.isfinite(test.score_b)
    s_q = np.where(fwd, test.score_a, test.score_b)[rows]
    w_q = np.where(fwd, test.score_b, test.score_a)[rows]
    return test.p[rows], s_q, w_q


def default_pairs(test: Side) -> list[tuple[str, str]]:
    """Per score source: its best LLM against its worst (by mean test quality)."""
    out = []
    for src in np.unique(test.source[np.isfinite(test.score_a)]):
        rows = (test.source == src) & np.isfinite(test.score_a)
        names = np.concatenate([test.a[rows], test.b[rows]])
        quality = np.concatenate([test.score_a[rows], test.score_b[rows]])
        mean = {m: quality[names == m].mean() for m in np.unique(names)}
        ranked = sorted(mean, key=mean.get)
        out.append((ranked[-1], ranked[0]))
    return out


def routing_results(test: Side, routers: dict[str, Scores], pairs: Sequence[tuple[str, str]], *,
                    n_boot: int = 200, seed: int = 0) -> list[dict]:
    out = []
    for strong, weak in pairs:
        p, s_q, w_q = strong_weak(test, strong, weak)
        if p.size < 10:
            log.warning("routing pair %s / %s: only %d test prompts with both scores; skipped",
                        strong, weak, p.size)
            continue
        entry = {"strong": strong, "weak": weak, "n_prompts": int(p.size),
                 "strong_mean": float(s_q.mean()), "weak_mean": float(w_q.mean()),
                 "oracle_mean": float(np.maximum(s_q, w_q).mean()), "routers": {}}
        for name, scores in routers.items():
            if strong not in scores.models or weak not in scores.models:
                continue
            d = scores.diff(p, np.full(p.size, strong, object), np.full(p.size, weak, object))
            if name == "random":
                # Its expectation: sending a random x % of prompts to the strong LLM earns x % of the
                # gap on average, the straight line (APGR 0.5, CPT(p) = p) that a constant score
                # difference also draws; one draw's curve is noise around it.
                d = np.zeros(p.size)
            pct, quality = metrics.routing_curve(s_q, w_q, d, n_points=11)
            entry["routers"][name] = {
                "apgr": metrics.apgr(s_q, w_q, d, n_points=11),
                "apgr_ci": metrics.bootstrap_ci(lambda s, w, x: metrics.apgr(s, w, x, n_points=11),
                                                p, s_q, w_q, d, n_boot=n_boot, seed=seed),
                "cpt50": metrics.cpt(s_q, w_q, d, 0.5, n_points=11),
                "cpt80": metrics.cpt(s_q, w_q, d, 0.8, n_points=11),
                "curve": [pct.tolist(), quality.tolist()]}
        oracle = s_q - w_q  # the oracle's diff: exactly the quality gain of the strong LLM
        entry["oracle_apgr"] = metrics.apgr(s_q, w_q, oracle, n_points=11)
        out.append(entry)
    return out


LAMBDAS = np.concatenate([[0.0], np.logspace(-3, 3, 61)])


def cost_results(test: Side, routers: dict[str, Scores]) -> list[dict]:
    """Quality-versus-cost curves per source with costs, over the prompts where every LLM of
    the source has a score and a cost."""
    out = []
    has_cost = np.isfinite(test.cost_a) & np.isfinite(test.cost_b) & np.isfinite(test.score_a)
    for src in np.unique(test.source[has_cost]):
        rows = (test.source == src) & has_cost
        models = sorted(set(test.a[rows]) | set(test.b[rows]))
        col = {m: j for j, m in enumerate(models)}
        prompts = np.unique(test.p[rows])
        prow = {p: i for i, p in enumerate(prompts.tolist())}
        quality = np.full((len(prompts), len(models)), np.nan)
        cost = np.full_like(quality, np.nan)
        sides = ((test.a, test.score_a, test.cost_a), (test.b, test.score_b, test.cost_b))
        for side_m, side_q, side_c in sides:
            r = np.array([prow[p] for p in test.p[rows]])
            c = np.array([col[m] for m in side_m[rows]])
            quality[r, c], cost[r, c] = side_q[rows], side_c[rows]
        full = np.isfinite(quality).all(axis=1) & np.isfinite(cost).all(axis=1)
        quality, cost, prompts = quality[full], cost[full], prompts[full]
        entry = {"source": str(src), "models": models, "n_prompts": int(full.sum()), "routers": {}}
        for name, scores in routers.items():
            if not set(models) <= set(scores.models):
                continue
            s = scores.matrix[np.ix_(prompts, [scores.models.index(m) for m in models])]
            curve = metrics.cost_quality_curve(quality, cost, s, LAMBDAS)
            entry["routers"][name] = {"cost": curve.cost.tolist(), "quality": curve.quality.tolist()}
            entry.update(model_cost=curve.model_cost.tolist(), model_quality=curve.model_quality.tolist(),
                         oracle_cost=curve.oracle_cost, oracle_quality=curve.oracle_quality)
        out.append(entry)
    return out


def best_under_budget(cost: Sequence[float], quality: Sequence[float], budget: float) -> float:
    """The best quality among a curve's points whose mean cost is within the budget."""
    ok = [q for c, q in zip(cost, quality, strict=True) if c <= budget * (1 + 1e-9)]
    return max(ok) if ok else float("nan")
