"""`python -m experiments.row_fit_study`: ways to fit a new LLM's row, on the unseen-LLM stage.

For each held-out LLM of `experiments/transfer.json`, the recommended spec is trained without it
(as `experiments.transfer_study.stage_unseen` does) and its row is fitted from N of its
training-side records (the same draws) in several ways, each ranked on the test side's decisive
pairs that involve it:

* *as add_model fits it*: `fit_llm_row` with its comparisons and its own per-model scores;
* *comparisons only*;
* *level free*: the prior's weight chosen by cross-validation per coordinate group, the level
  (the IRT row's first coordinate) among 1, 0.05 and 0, the skills among 1, 0.25 and 0.05;
* *level free + own scores*;
* *level centred on its records*: as *level free*, the prior's level centred on its Bradley-Terry
  strength from the records, mapped onto the rows' levels by least squares over the known LLMs;

and *rank by its records* (`records_level`), the baseline. Results: the output JSON (accuracy per
LLM and variant, in %). No head is trained per variant, so one LLM costs one training.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from experiments.study import Study, load, recommended_overrides, router_config, train
from experiments.transfer_study import _drawn, _training_pairs, records_level
from training.evaluation import dataset as eval_data
from training.evaluation.baselines import BradleyTerry
from training.evaluation.scores import Scores
from training.evaluation.transfer import load_transfer_spec, mean_over_draws, unseen_llm_accuracy
from training.llm_embeddings.records import comparison_records, strength_given
from training.llm_embeddings.row_fit import fit_llm_row
from training.specs import DEFAULT_ENCODER

log = logging.getLogger("experiments.row_fit_study")


def level_free_scales(width: int) -> tuple[torch.Tensor, ...]:
    """Per-coordinate prior weights: the level's and the skills' chosen separately."""
    out = []
    for level in (1.0, 0.05, 0.0):
        for skills in (1.0, 0.25, 0.05):
            scale = torch.full((width,), skills)
            scale[0] = level
            out.append(scale)
    return tuple(out)


def variants(without, config, sub, own, level: float) -> dict[str, np.ndarray]:
    """{variant: the new row [1, D]} fitted from records `sub` and own scores `own`."""
    head = without.net.head.cpu()
    vectors = without.prompt_vectors(list(sub.prompts))
    known = list(without.llm_names)
    table = without.llm_embeddings.detach().cpu().numpy()
    free = level_free_scales(table.shape[1])
    centre = table.mean(0)
    centre[0] = level
    pw = config.loss.pointwise_weight
    return {
        "as add_model fits it": fit_llm_row(head, vectors, sub, known, table, own_scores=own,
                                            pointwise_weight=pw),
        "comparisons only": fit_llm_row(head, vectors, sub, known, table),
        "level free": fit_llm_row(head, vectors, sub, known, table, prior_scales=free),
        "level free + own scores": fit_llm_row(head, vectors, sub, known, table, own_scores=own,
                                               pointwise_weight=pw, prior_scales=free),
        "level centred on its records": fit_llm_row(head, vectors, sub, known, table, prior_scales=free,
                                                    prior_mean=centre),
    }


def study_llm(llm: str, ds, cache, study: Study, n: int) -> dict[str, float]:
    spec = load_transfer_spec(study.transfer)
    config = router_config(recommended_overrides(), study.encoder)
    train_pairs, test = _training_pairs(ds), eval_data.side(ds, test=True)
    a = np.asarray(train_pairs["model_a"].to_pylist(), dtype=object)
    b = np.asarray(train_pairs["model_b"].to_pylist(), dtype=object)
    involves = (a == llm) | (b == llm)
    others = train_pairs.filter(pa.array(~involves))
    without, _ = train(config, others, cache)
    mine = train_pairs.filter(pa.array(involves))
    records = comparison_records(mine).of(llm)
    known = list(without.llm_names)
    among = {*known, llm}
    bt = BradleyTerry().fit(None, None, others["model_a"].to_numpy(zero_copy_only=False),
                            others["model_b"].to_numpy(zero_copy_only=False), others["label"].to_numpy())
    table = without.llm_embeddings.detach().cpu().numpy()
    strength = np.array([bt.strengths.get(m, 0.0) for m in known])
    basis = np.stack([strength, np.ones_like(strength)], 1)
    slope, shift = np.linalg.lstsq(basis, table[:, 0], rcond=None)[0]  # rows' level on BT strength
    draws: dict[str, list] = {}
    for seed in range(spec.unseen_draws):
        sub, own = _drawn(mine, records, llm, n, seed)
        level = slope * strength_given(sub, bt.strengths) + shift
        for name, row in variants(without, config, sub, own, level).items():
            matrix = without.score_matrix(test.prompts, llm_embeddings=np.vstack([table, row]))
            scores = Scores([*known, llm], matrix.astype(np.float64))
            draws.setdefault(name, []).append(unseen_llm_accuracy(test, llm, scores, among))
    out = {name: 100 * mean_over_draws(d)["accuracy"] for name, d in draws.items()}
    baseline_spec = type(spec)(spec.families, spec.folds, spec.unseen_llms, (n,), spec.unseen_draws)
    baseline = records_level(others, records, llm, test, among, baseline_spec)[n]
    out["rank by its records"] = 100 * baseline["accuracy"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.row_fit_study",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--cache-root", default="build/cache")
    parser.add_argument("--records", type=int, default=200, help="N: records per draw")
    parser.add_argument("--out", default="experiments/round2/row_fit_variants.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    study = Study(Path(args.data_dir), Path("build/row_fit_study"), Path("docs"), Path(args.cache_root),
                  DEFAULT_ENCODER, 0.95, ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"))
    ds, cache, _ = load(study)
    results = {}
    for llm in load_transfer_spec(study.transfer).unseen_llms:
        results[llm] = study_llm(llm, ds, cache, study, args.records)
        log.info("%s: %s", llm, ", ".join(f"{k} {v:.2f}" for k, v in results[llm].items()))
    Path(args.out).write_text(json.dumps({"command": "python -m experiments.row_fit_study",
                                          "records": args.records, "accuracy": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
