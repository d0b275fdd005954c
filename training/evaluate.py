"""`python -m training.evaluate BUNDLE DATA...`: how well a router ranks LLMs on unseen prompts.

    python -m training.evaluate build/quality/bundle ../shared/data/*.parquet \\
        --aliases ../shared/data/model_aliases.json --split 0.2:0 --out build/quality/report \\
        --pair gpt-4-1106-preview:mixtral-8x7b-instruct-v0.1

Writes `report.md`, `results.json`, `per_pair.csv` and PNG plots to `--out`.

**Split.** Prompts are grouped as near-duplicates (cosine >= 0.95 between frozen encoder
embeddings, transitively) and the groups are split with `training.data.splits.split_by_prompt`
(seeded, the same on every machine), over all files at once: a prompt and its near-duplicates are
on one side in every source. `--split 0.2:0` holds out 20 % of the groups with seed 0; the router
must have been trained without them (train it on the other side, as `experiments.quality` does).
`--split none` evaluates every row and fits no baselines.

**Baselines** are fitted on the training side of the same split: random, Bradley-Terry (one
strength per LLM, pooled over sources), prompt length, kNN win rates and RouteLLM-style matrix
factorisation over the frozen encoder embeddings (from `training.encoder.prompt_cache`).

**Metrics** per source (the data file) and pooled, on the decisive pairs both the router and
every baseline can score: pairwise accuracy (equal scores count half) with a 95 % bootstrap
interval resampling near-duplicate prompt groups, the paired interval of router minus
Bradley-Terry, log-loss of sigmoid(s_a - s_b), calibration, a per-LLM-pair table, and the
prompt-shuffle check (test prompts permuted among themselves within each source: the accuracy a
router keeps without its prompt). For per-model score data: routing curves, APGR and CPT for
strong / weak pairs (11 decile thresholds); with costs, the quality-versus-cost curve.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routerdb.tokenizer import TRUNCATIONS
from training.evaluation import metrics
from training.evaluation.baselines import (
    BradleyTerry,
    KNNWinRate,
    MatrixFactorization,
    PromptLength,
    RandomBaseline,
)
from training.evaluation.dataset import Dataset, Side, build_dataset, load_files, parse_split, side
from training.specs import DEFAULT_TRUNCATION

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
ROUTER = "routerdb"
BT = "bradley_terry"


# --- routers as score matrices ------------------------------------------------------------------


@dataclass
class Scores:
    """A router's scores [P, M] for a side's prompts against its LLMs."""

    models: list[str]
    matrix: np.ndarray

    def diff(self, p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return metrics.pair_diff(self.matrix, self.models, p, a, b)


def bundle_scores(bundle: str | Path, prompts: list[str]) -> Scores:
    from routerdb.scorer import Router

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


# --- metrics ------------------------------------------------------------------------------------


def common_rows(test: Side, routers: dict[str, Scores]) -> np.ndarray:
    """Rows whose two LLMs every router can score."""
    keep = np.ones(len(test.label), bool)
    for scores in routers.values():
        known = set(scores.models)
        keep &= np.array([x in known and y in known for x, y in zip(test.a, test.b, strict=True)], dtype=bool)
    return keep


def boot_weights(groups: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(group code per row, [n_boot, G] draw counts): the resamples of `metrics.bootstrap_ci`."""
    _, code = np.unique(groups, return_inverse=True)
    n = int(code.max()) + 1
    rng = np.random.default_rng(seed)
    draws = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)])
    return code, draws


def ratio_ci(values: np.ndarray, code: np.ndarray, draws: np.ndarray, alpha: float = 0.05):
    """Percentile interval of mean(values) under group resampling, from per-group sums."""
    n_groups = draws.shape[1]
    sums = np.bincount(code, weights=values, minlength=n_groups)
    counts = np.bincount(code, minlength=n_groups).astype(np.float64)
    stats = (draws @ sums) / np.maximum(draws @ counts, 1e-12)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


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


# --- routing and cost curves ----------------------------------------------------------------------


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


# --- the whole evaluation --------------------------------------------------------------------------


def evaluate(ds: Dataset, router: Scores | None, embed=None, *, pairs: Sequence[tuple[str, str]] = (),
             n_boot: int = 1000, mf_epochs: int = 10, seed: int = 0) -> dict:
    """Every number of the report, as one JSON-ready dict. `router` scores the test prompts."""
    test = side(ds, test=True)
    routers: dict[str, Scores] = {} if router is None else {ROUTER: router}
    if not ds.is_test.all():
        routers.update(baseline_scores(side(ds, test=False), test, embed, mf_epochs=mf_epochs, seed=seed))
    keep = common_rows(test, routers)
    excluded = int((~keep).sum())
    if excluded:
        log.info("%d test pairs name an LLM some router cannot score; evaluated on the other %d",
                 excluded, int(keep.sum()))
    test = test.take(keep)
    pair_list = list(pairs) or default_pairs(test)
    curve_routers = dict(routers)
    return {
        "n_test_rows": int(len(test.label)), "excluded_rows": excluded,
        "n_test_prompts": int(len(np.unique(test.p))),
        "pairs": pair_metrics(test, routers, n_boot=n_boot, seed=seed),
        "calibration": calibration_tables(test, routers),
        "per_pair": per_pair_rows(test, routers),
        "routing": routing_results(test, curve_routers, pair_list, seed=seed),
        "cost": cost_results(test, {k: v for k, v in routers.items() if k != "prompt_length"}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("bundle", help="a routerdb bundle directory")
    parser.add_argument("data", nargs="+", help="pairwise or per-model score files")
    parser.add_argument("--aliases", help="model_aliases.json")
    parser.add_argument("--split", default="0.2:0", 
                        help="test FRACTION:SEED of near-duplicate groups, or none")
    parser.add_argument("--out", default="build/evaluate", help="report directory")
    parser.add_argument("--pair", action="append", default=[], metavar="STRONG:WEAK",
                        help="strong / weak LLMs for routing curves (default: per score source, best:worst)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, 
                        help="frozen encoder for the split and baselines")
    parser.add_argument("--cache-dir", default="build/cache", help="embedding cache root")
    parser.add_argument("--truncation", choices=TRUNCATIONS, default=DEFAULT_TRUNCATION,
                        help="what the frozen encoder keeps of a long prompt (split and baselines)")
    parser.add_argument("--threshold", type=float, default=0.95, help="near-duplicate cosine")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--mf-epochs", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from training.encoder.prompt_cache import PromptCache
    from training.evaluation.report import write_report

    try:
        split = parse_split(args.split)
        pairs = [tuple(p.split(":", 1)) for p in args.pair]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"--pair {args.pair}; allowed: STRONG:WEAK LLM names")
        table, source = load_files(args.data, args.aliases)
        cache = PromptCache.for_encoder(args.encoder, 128, args.cache_dir, truncation=args.truncation)

        def embed(prompts):
            cache.fill(prompts)
            return cache.lookup(prompts)

        ds = build_dataset(table, source, embed, split, args.threshold)
        test_prompts = side(ds, test=True).prompts
        results = evaluate(ds, bundle_scores(args.bundle, test_prompts), embed, pairs=pairs,
                           n_boot=args.n_boot, mf_epochs=args.mf_epochs)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    given = argv if argv is not None else sys.argv[1:]
    results["command"] = " ".join(["python -m training.evaluate", *given])
    results["split"] = args.split
    report = write_report(results, Path(args.out), bundle=Path(args.bundle))
    print(f"report written to {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
