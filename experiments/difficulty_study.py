"""`python -m experiments.difficulty_study`: the difficulty prior alone, on the domain-transfer stage.

Routes each domain task's test prompts by a predicted difficulty only (low predicted mean
correctness -> strong LLM), fitted per fold on the fold's training side exactly as the IRT head's
`difficulty_prior` is (`training.model.difficulty`): no head is trained, so each setting costs
seconds. It picks the ridge strength and the target (mean correctness, or centred per LLM) by
transfer, and shows what the prior is worth against the prompt-length rule on the same tasks.
Results: `experiments/difficulty.json` (APGR per task and setting, with 95 % group intervals).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from experiments.study import Study, load
from routerdb.features import FeatureStats, compute_features
from training.evaluation import dataset as eval_data
from training.evaluation.scores import Scores
from training.evaluation.transfer import (
    domain_result,
    families_of,
    fold_dataset,
    load_transfer_spec,
    task_side,
)
from training.model.difficulty import fit_ridge, prompt_targets
from training.specs import DEFAULT_ENCODER

log = logging.getLogger("experiments.difficulty_study")

ALPHAS = (0.01, 0.1, 1.0, 10.0)


def prompt_matrix(prompts: list[str], embed, stats: FeatureStats) -> np.ndarray:
    """[P, H + F]: what the head reads (frozen vector, normalised prompt features)."""
    return np.hstack([embed(prompts), stats.normalize(compute_features(prompts))]).astype(np.float64)


def fold_routers(fds: eval_data.Dataset, embed, tasks, settings) -> dict[str, dict[str, Scores]]:
    """Per task: {setting: Scores over [strong, weak]} with the strong LLM scored by difficulty."""
    train = fds.pairs.filter(np.asarray(~fds.is_test))
    test = eval_data.side(fds, test=True)
    stats = FeatureStats.fit(compute_features(sorted(set(train["prompt"].to_pylist()))))
    x_test = prompt_matrix(test.prompts, embed, stats)
    length = np.log1p(np.array([len(p) for p in test.prompts], dtype=np.float64))
    difficulty = {"prompt length (log chars)": length}
    for centre in (False, True):
        targets = prompt_targets(train, centre=centre)
        x = prompt_matrix(targets.prompts, embed, stats)
        for alpha in settings:
            coef, intercept = fit_ridge(x, targets.mean, alpha, weight=np.sqrt(targets.count))
            name = f"ridge alpha {alpha:g}" + (", centred per LLM" if centre else "")
            difficulty[name] = -(x_test @ coef + intercept)
    routers = {}
    for task in tasks:
        routers[task.name] = {name: Scores([task.strong, task.weak], np.stack([d, np.zeros_like(d)], 1))
                              for name, d in difficulty.items()}
    return routers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.difficulty_study",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--cache-root", default="build/cache")
    parser.add_argument("--out", default="experiments/difficulty.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    study = Study(Path(args.data_dir), Path("build/quality"), Path("docs"), Path(args.cache_root),
                  DEFAULT_ENCODER,
                  0.95, ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"))
    ds, _, embed = load(study)
    spec = load_transfer_spec(study.transfer)
    rows = []
    for fold, tasks in spec.folds.items():
        fds = fold_dataset(ds, fold, tasks, spec.families)
        test = eval_data.side(fds, test=True)
        families = families_of(fds, spec.families)[fds.is_test]
        routers = fold_routers(fds, embed, tasks, ALPHAS)
        for task in tasks:
            result = domain_result(task_side(test, families, task), task, routers[task.name])
            if result is not None:
                rows.append({"fold": fold, **result})
    settings = sorted({k for r in rows for k in r["routers"] if "weak LLM's score low" not in k})
    summary = {s: float(np.mean([r["routers"][s]["apgr"] for r in rows])) for s in settings}
    for s in settings:
        log.info("%-40s mean APGR %.3f, min %.3f", s, summary[s], min(r["routers"][s]["apgr"] for r in rows))
    Path(args.out).write_text(json.dumps({"command": "python -m experiments.difficulty_study",
                                          "mean_apgr": summary,
                                          "tasks": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
