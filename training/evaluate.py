"""`routerdb-train evaluate BUNDLE DATA...`: how well a router ranks LLMs on unseen prompts.

    routerdb-train evaluate build/quality/bundle DATA/*.parquet \\
        --aliases DATA/model_aliases.json --split 0.2:0 --out build/quality/report \\
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
from pathlib import Path

import numpy as np

from routerdb.tokenizer import TRUNCATIONS
from training import command
from training.encoder.prompt_cache import PromptCache
from training.evaluation.accuracy import calibration_tables, common_rows, pair_metrics, per_pair_rows
from training.evaluation.dataset import Dataset, build_dataset, load_files, parse_split, side
from training.evaluation.report import write_report
from training.evaluation.routing import cost_results, default_pairs, routing_results
from training.evaluation.scores import ROUTER, Scores, baseline_scores, bundle_scores
from training.specs import DEFAULT_ENCODER, DEFAULT_TRUNCATION

log = logging.getLogger(__name__)


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    """Split, score the test side with the bundle and the baselines, write the report."""
    split = parse_split(args.split)
    pairs = [tuple(p.split(":", 1)) for p in args.pair]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"--pair {args.pair}; allowed: STRONG:WEAK LLM names")
    table, source = load_files(args.data, args.aliases)
    embed = PromptCache.for_encoder(args.encoder, 128, args.cache_dir, truncation=args.truncation).vectors
    ds = build_dataset(table, source, embed, split, args.threshold)
    test_prompts = side(ds, test=True).prompts
    results = evaluate(ds, bundle_scores(args.bundle, test_prompts), embed, pairs=pairs,
                       n_boot=args.n_boot, mf_epochs=args.mf_epochs)
    results["command"] = args.command_line
    results["split"] = args.split
    report = write_report(results, Path(args.out), bundle=Path(args.bundle))
    print(f"report written to {report}")
    return command.OK


COMMAND = command.Command("evaluate", "how well a router ranks LLMs on unseen prompts, against baselines",
                          add_arguments, run, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.evaluate`: the same as `routerdb-train evaluate`."""
    return command.main(COMMAND, argv, prog="python -m training.evaluate")


if __name__ == "__main__":
    sys.exit(main())
