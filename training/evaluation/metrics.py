"""Evaluation maths for a router: pure numpy, no torch import.

Conventions shared by every function here:

- A *pair* compares LLM ``a`` with LLM ``b`` on one prompt. ``diff = s(a) - s(b)`` is the
  router's score difference and ``label`` is ``+1`` (a better), ``-1`` (b better) or ``0`` (tie).
  Pair metrics use only the *decisive* pairs (label != 0); with none they return ``nan``.
- ``p = sigmoid(scale * diff)`` is read as the predicted probability that ``a`` wins.
- Routing curves compare a *strong* and a *weak* LLM per prompt: ``strong_q`` / ``weak_q`` are
  their qualities and ``router_diff`` is the router's ``s(strong) - s(weak)``; a prompt goes to
  the strong LLM when its diff is above the threshold. Tied diffs are always routed together,
  and a curve's points are joined by straight lines: the line across a block of tied prompts is
  exactly the expected quality of sending a uniformly random share of that block. So a
  constant router's curve is the straight line from the weak LLM to the strong LLM, and its
  APGR is exactly 0.5.
- Confidence intervals resample *groups* (prompt ids), never rows: rows of one prompt are
  correlated, and resampling rows would make the intervals too narrow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CostQualityCurve",
    "apgr",
    "boot_weights",
    "bootstrap_ci",
    "calibration",
    "cost_quality_curve",
    "cpt",
    "expected_calibration_error",
    "log_loss",
    "pair_diff",
    "paired_bootstrap_diff",
    "pairwise_accuracy",
    "per_pair_table",
    "ratio_ci",
    "routing_curve",
]


# --- pairwise metrics -----------------------------------------------------------------------


def _decisive(diff: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (diff, label) pair of arrays and keep the decisive pairs."""
    diff = np.asarray(diff, dtype=np.float64).ravel()
    label = np.asarray(label).ravel()
    if diff.shape != label.shape:
        raise ValueError(
            f"diff has {diff.size} values but label has {label.size}; pass one of each per pair"
        )
    bad = np.setdiff1d(np.unique(label), [-1, 0, 1])
    if bad.size:
        raise ValueError(
            f"label has values {bad.tolist()}; allowed are +1 (a better), -1 (b better), 0 (tie)"
        )
    if not np.all(np.isfinite(diff)):
        raise ValueError(f"diff has {int(np.sum(~np.isfinite(diff)))} non-finite values")
    keep = label != 0
    return diff[keep], label[keep].astype(np.float64)


def pairwise_accuracy(diff: np.ndarray, label: np.ndarray) -> float:
    """Share of decisive pairs whose winner the router ranks higher; ``diff == 0`` counts half."""
    d, y = _decisive(diff, label)
    if d.size == 0:
        return float("nan")
    credit = np.where(d * y > 0, 1.0, np.where(d == 0, 0.5, 0.0))
    return float(credit.mean())


def log_loss(diff: np.ndarray, label: np.ndarray, scale: float = 1.0) -> float:
    """Mean ``-log sigmoid(scale * label * diff)`` over decisive pairs, computed stably."""
    d, y = _decisive(diff, label)
    if d.size == 0:
        return float("nan")
    # -log sigmoid(z) = log(1 + exp(-z)) = logaddexp(0, -z), no overflow for large |z|
    return float(np.mean(np.logaddexp(0.0, -scale * y * d)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def calibration(
    diff: np.ndarray, label: np.ndarray, bins: int = 10, scale: float = 1.0
) -> list[tuple[float, float, int]]:
    """Reliability table of ``p = sigmoid(scale * diff)`` on the decisive pairs.

    ``bins`` equal-width bins over [0, 1] (p == 1 falls in the last). Returns one
    ``(mean_predicted_p, observed_win_rate_of_a, count)`` per non-empty bin, in order of p;
    the counts sum to the number of decisive pairs.
    """
    if bins < 1:
        raise ValueError(f"bins={bins}; need at least 1")
    d, y = _decisive(diff, label)
    p = _sigmoid(scale * d)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    table = []
    for b in np.unique(which):
        inside = which == b
        table.append((float(p[inside].mean()), float(np.mean(y[inside] > 0)), int(inside.sum())))
    return table


def expected_calibration_error(
    diff: np.ndarray, label: np.ndarray, bins: int = 10, scale: float = 1.0
) -> float:
    """Count-weighted mean of ``|mean_predicted_p - observed_win_rate|`` over calibration bins."""
    table = calibration(diff, label, bins=bins, scale=scale)
    n = sum(count for _, _, count in table)
    if n == 0:
        return float("nan")
    return float(sum(count * abs(p - w) for p, w, count in table) / n)


def pair_diff(
    scores: np.ndarray,
    models: Sequence[str],
    prompt_idx: np.ndarray,
    model_a: np.ndarray,
    model_b: np.ndarray,
) -> np.ndarray:
    """``scores[prompt, a] - scores[prompt, b]`` per pair, from a [P, M] score matrix.

    ``models`` names the M columns; ``prompt_idx`` indexes the P rows.
    """
    column = {m: j for j, m in enumerate(models)}
    names = np.concatenate([np.asarray(model_a), np.asarray(model_b)])
    unknown = sorted(set(names.tolist()) - set(column))
    if unknown:
        raise KeyError(
            f"pairs name models {unknown} that have no score column; columns are {list(column)}"
        )
    col_a = np.array([column[m] for m in np.asarray(model_a).tolist()], dtype=np.int64)
    col_b = np.array([column[m] for m in np.asarray(model_b).tolist()], dtype=np.int64)
    rows = np.asarray(prompt_idx, dtype=np.int64)
    return scores[rows, col_a] - scores[rows, col_b]


def per_pair_table(
    model_a: np.ndarray, model_b: np.ndarray, diff: np.ndarray, label: np.ndarray
) -> list[dict]:
    """Accuracy per unordered LLM pair, sorted by pair.

    Each row: ``model_a`` / ``model_b`` (the pair's names in sorted order), ``n`` (decisive
    pairs), ``ties`` and ``accuracy`` (``nan`` when ``n == 0``). Accuracy does not depend on
    which side a model was shown on.
    """
    names, code = np.unique(
        np.concatenate([np.asarray(model_a), np.asarray(model_b)]).astype(str), return_inverse=True
    )
    code_a, code_b = np.split(code, 2)
    lo, hi = np.minimum(code_a, code_b), np.maximum(code_a, code_b)
    key = lo * names.size + hi  # one integer per unordered pair, sorted like (lo, hi)
    diff, label = np.asarray(diff, dtype=np.float64), np.asarray(label)
    rows = []
    for k in np.unique(key):
        inside = key == k
        rows.append(
            {
                "model_a": str(names[k // names.size]),
                "model_b": str(names[k % names.size]),
                "n": int(np.sum(label[inside] != 0)),
                "ties": int(np.sum(label[inside] == 0)),
                "accuracy": pairwise_accuracy(diff[inside], label[inside]),
            }
        )
    return rows


# --- bootstrap over groups ------------------------------------------------------------------


def boot_weights(groups: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(group code per row, [n_boot, G] draw counts): ``n_boot`` resamples of whole groups with
    replacement, the one resampling every interval here uses (same seed, same resamples)."""
    _, code = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(code.max()) + 1 if code.size else 0
    if n_groups == 0:
        raise ValueError("groups is empty; need at least one row")
    rng = np.random.default_rng(seed)
    draws = np.stack([np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
                      for _ in range(n_boot)])
    return code, draws


def ratio_ci(values: np.ndarray, code: np.ndarray, draws: np.ndarray, alpha: float = 0.05):
    """Percentile interval of mean(values) under the resamples of `boot_weights`, from per-group
    sums (fast: no row is copied); equals ``bootstrap_ci(np.mean, ...)`` with the same resamples."""
    n_groups = draws.shape[1]
    sums = np.bincount(code, weights=values, minlength=n_groups)
    counts = np.bincount(code, minlength=n_groups).astype(np.float64)
    stats = (draws @ sums) / np.maximum(draws @ counts, 1e-12)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _group_resamples(groups: np.ndarray, n_boot: int, seed: int):
    """Yield ``n_boot`` row-index arrays, the resamples of `boot_weights`.

    A group drawn c times contributes all of its rows c times, in their original order.
    """
    code, draws = boot_weights(groups, n_boot, seed)
    rows = np.arange(code.size)
    for counts in draws:
        yield np.repeat(rows, counts[code])


def _check_rows(groups: np.ndarray, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(x) for x in arrays]
    n = len(groups)
    wrong = [len(x) for x in arrays if len(x) != n]
    if wrong:
        raise ValueError(f"groups has {n} rows but arrays have {wrong}; pass one value per row")
    return arrays


def _percentile_interval(stats: list[float], alpha: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}; need 0 < alpha < 1 (0.05 gives a 95% interval)")
    stats = np.asarray(stats, dtype=np.float64)
    if np.all(np.isnan(stats)):
        return float("nan"), float("nan")
    low, high = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    stat_fn: Callable[..., float],
    groups: np.ndarray,
    *arrays: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile interval of ``stat_fn(*arrays)``, resampling groups (e.g. prompt ids).

    ``arrays`` are row-aligned with ``groups``; each resample keeps every row of a drawn group.
    Resamples where the statistic is ``nan`` are dropped.
    Example: ``bootstrap_ci(pairwise_accuracy, prompt_id, diff, label)``.
    """
    arrays = _check_rows(groups, arrays)
    stats = [stat_fn(*(x[idx] for x in arrays)) for idx in _group_resamples(groups, n_boot, seed)]
    return _percentile_interval(stats, alpha)


def paired_bootstrap_diff(
    stat_fn: Callable[..., float],
    groups: np.ndarray,
    arrays_a: Sequence[np.ndarray],
    arrays_b: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile interval of ``stat_fn(*arrays_a) - stat_fn(*arrays_b)``, resampled jointly.

    Both arguments see the same resampled groups, so the shared prompt difficulty cancels.
    Example, router minus Bradley-Terry accuracy:
    ``paired_bootstrap_diff(pairwise_accuracy, prompt_id, (router_diff, label), (bt_diff, label))``.
    """
    arrays_a, arrays_b = _check_rows(groups, arrays_a), _check_rows(groups, arrays_b)
    stats = [
        stat_fn(*(x[idx] for x in arrays_a)) - stat_fn(*(x[idx] for x in arrays_b))
        for idx in _group_resamples(groups, n_boot, seed)
    ]
    return _percentile_interval(stats, alpha)


# --- strong / weak routing curves -----------------------------------------------------------


def _routing_inputs(strong_q, weak_q, router_diff) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(x, dtype=np.float64).ravel() for x in (strong_q, weak_q, router_diff)]
    sizes = {x.size for x in arrays}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"strong_q, weak_q, router_diff have sizes {[x.size for x in arrays]}; "
            "need one non-empty value per prompt in each"
        )
    for name, x in zip(("strong_q", "weak_q", "router_diff"), arrays, strict=True):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} has {int(np.sum(~np.isfinite(x)))} non-finite values")
    return arrays[0], arrays[1], arrays[2]


def routing_curve(
    strong_q: np.ndarray,
    weak_q: np.ndarray,
    router_diff: np.ndarray,
    n_points: int | None = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean quality against the percentage of prompts sent to the strong LLM.

    With ``n_points=11`` the thresholds are the deciles 0%, 10%, ..., 100% of ``router_diff``
    (linear interpolation); at threshold t the prompts with ``diff > t`` go to the strong LLM.
    The 0% decile is replaced by -inf so that the curve always ends at exactly 100% strong
    calls (the 100% decile, the maximum, gives exactly 0%). With ``n_points=None`` every
    distinct diff is a threshold: the exact curve. Returns ``(strong_call_pct, quality)``,
    sorted by ascending percentage; tied percentages have equal quality.
    """
    strong, weak, diff = _routing_inputs(strong_q, weak_q, router_diff)
    n = diff.size
    if n_points is None:
        thresholds = np.unique(diff)
    elif n_points >= 2:
        thresholds = np.quantile(diff, np.linspace(0.0, 1.0, n_points))[1:]
    else:
        raise ValueError(f"n_points={n_points}; need at least 2 (both ends), or None for all")
    n_strong = n - np.searchsorted(np.sort(diff), thresholds, side="right")
    n_strong = np.concatenate([[n], n_strong])[::-1]  # ascending strong calls
    # prompts sorted by descending diff: the k sent to strong are always the first k
    order = np.argsort(-diff, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum(strong[order] - weak[order])])
    quality = (weak.sum() + gain[n_strong]) / n
    return 100.0 * n_strong / n, quality


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def apgr(
    strong_q: np.ndarray,
    weak_q: np.ndarray,
    router_diff: np.ndarray,
    n_points: int | None = None,
) -> float:
    """Average performance gap recovered: ``(AUC - weak_mean) / (strong_mean - weak_mean)``.

    AUC is the trapezoid area under the routing curve over the strong-call fraction in [0, 1].
    A random router scores about 0.5 and a constant one exactly 0.5; an oracle can exceed 1
    where the weak LLM beats the strong one on some prompts. By default the exact curve is used
    (``n_points=None``); pass 11 for the decile curve. ``nan`` when both LLMs' means are equal.
    """
    pct, quality = routing_curve(strong_q, weak_q, router_diff, n_points=n_points)
    weak_mean, strong_mean = quality[0], quality[-1]
    if strong_mean == weak_mean:
        return float("nan")
    return float((_trapezoid(pct / 100.0, quality) - weak_mean) / (strong_mean - weak_mean))


def cpt(
    strong_q: np.ndarray,
    weak_q: np.ndarray,
    router_diff: np.ndarray,
    recovered: float = 0.5,
    n_points: int | None = None,
) -> float:
    """Call-performance threshold: the strong-call percentage that first recovers ``recovered``
    of the quality gap, ``weak_mean + recovered * (strong_mean - weak_mean)``.

    Linear interpolation between the curve's points (exact curve by default). ``nan`` when the
    strong LLM is not better on average or the curve never reaches the target.
    """
    pct, quality = routing_curve(strong_q, weak_q, router_diff, n_points=n_points)
    weak_mean, strong_mean = quality[0], quality[-1]
    if strong_mean <= weak_mean:
        return float("nan")
    target = weak_mean + recovered * (strong_mean - weak_mean)
    return _first_crossing(pct, quality, target)


def _first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """Smallest x at which the piecewise-linear curve through (x, y) reaches ``target``."""
    if y[0] >= target:
        return float(x[0])
    hit = np.flatnonzero((y[:-1] < target) & (y[1:] >= target))
    if hit.size == 0:
        return float("nan")
    i = hit[0]
    return float(x[i] + (target - y[i]) * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))


# --- many LLMs with costs -------------------------------------------------------------------


@dataclass(frozen=True)
class CostQualityCurve:
    """Points of mean cost (USD per query) against mean quality; arrays are ordered by lambda."""

    lambdas: np.ndarray  # [L]
    cost: np.ndarray  # [L] the router's mean cost at each lambda
    quality: np.ndarray  # [L] the router's mean quality at each lambda
    oracle_cost: float  # per prompt the best LLM, the cheapest among equals
    oracle_quality: float
    model_cost: np.ndarray  # [M] always calling one LLM
    model_quality: np.ndarray  # [M]


def cost_quality_curve(
    quality: np.ndarray, cost: np.ndarray, scores: np.ndarray, lambdas: Sequence[float]
) -> CostQualityCurve:
    """Route each prompt to ``argmax(score - lambda * cost / cost.max())`` for every lambda.

    ``quality``, ``cost`` and ``scores`` are [P, M] (prompts x LLMs). Costs are divided by the
    largest cost in the matrix, so lambda is the score a router gives up to avoid the most
    expensive call; per-prompt cost differences are kept. Ties go to the lowest column.
    """
    quality, cost, scores = (np.asarray(x, dtype=np.float64) for x in (quality, cost, scores))
    if not (quality.ndim == 2 and quality.shape == cost.shape == scores.shape):
        raise ValueError(
            f"quality {quality.shape}, cost {cost.shape}, scores {scores.shape}: "
            "need three [P, M] matrices of the same shape"
        )
    if not np.all(np.isfinite(cost)) or np.any(cost < 0):
        raise ValueError("cost has missing, infinite or negative values; drop those prompts first")
    lambdas = np.asarray(lambdas, dtype=np.float64)
    scale = cost.max() if cost.max() > 0 else 1.0
    rows = np.arange(quality.shape[0])
    picks = [np.argmax(scores - lam * cost / scale, axis=1) for lam in lambdas]
    best = quality.max(axis=1, keepdims=True)
    oracle = np.argmin(np.where(quality == best, cost, np.inf), axis=1)
    return CostQualityCurve(
        lambdas=lambdas,
        cost=np.array([cost[rows, j].mean() for j in picks]),
        quality=np.array([quality[rows, j].mean() for j in picks]),
        oracle_cost=float(cost[rows, oracle].mean()),
        oracle_quality=float(best.mean()),
        model_cost=cost.mean(axis=0),
        model_quality=quality.mean(axis=0),
    )
