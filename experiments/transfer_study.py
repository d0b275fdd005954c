"""The transfer stages of the quality study (`training.evaluation.transfer` says what each measures).

    python -m experiments.quality --stage domain    # domain transfer for LLM pairs, per fold
    python -m experiments.quality --stage unseen    # an LLM held out, added back from N records
    python -m experiments.quality --stage loso      # leave one source out
    python -m experiments.quality --stage refit     # known LLMs re-fitted on a left-out source
    python -m experiments.quality --stage new_source  # LLMs added from records of a left-out source

Each configuration (a name and RouterConfig overrides of experiments.study.BASE) is trained on
cached frozen prompt vectors; results are appended to `transfer.jsonl` in the study's output
folder and a (stage, configuration, fold or LLM) already there is not run again.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from experiments.study import Study, done_runs, record, router_config, summarise, train, validate
from training.evaluation import dataset as eval_data
from training.evaluation.baselines import BradleyTerry
from training.evaluation.metrics import boot_weights, ratio_ci
from training.evaluation.scores import Scores, baseline_scores
from training.evaluation.transfer import (
    TransferSpec,
    domain_result,
    families_of,
    fold_dataset,
    load_transfer_spec,
    mean_over_draws,
    task_side,
    unseen_llm_accuracy,
)
from training.llm_embeddings.records import comparison_records, strength_given
from training.llm_embeddings.row_fit import fit_llm_row, known_scores, own_scores

log = logging.getLogger("experiments.transfer")


def stage_domain(ds: eval_data.Dataset, cache, embed, study: Study, configs: list[tuple[str, dict]]) -> None:
    """Per fold: the baselines once, then each configuration, on the fold's test prompts."""
    spec = load_transfer_spec(study.transfer)
    runs = study.out / "transfer.jsonl"
    for fold, tasks in spec.folds.items():
        fds = fold_dataset(ds, fold, tasks, spec.families)
        train_side, test = eval_data.side(fds, test=False), eval_data.side(fds, test=True)
        families = families_of(fds, spec.families)[fds.is_test]
        todo = [(name, o) for name, o in [("baselines", None), *configs]
                if f"domain {fold} {name}" not in done_runs(runs) and (not study.only or name in study.only)]
        for name, overrides in todo:
            t0 = time.perf_counter()
            if overrides is None:
                routers = baseline_scores(train_side, test, embed)
            else:
                model, _ = train(router_config(overrides, study.encoder), _training_pairs(fds), cache)
                matrix = model.score_matrix(test.prompts).astype(float)
                routers = {name: Scores(list(model.llm_names), matrix)}
            results = [domain_result(task_side(test, families, task), task, routers) for task in tasks]
            record(runs, {"name": f"domain {fold} {name}", "stage": "domain", "fold": fold, "config": name,
                          "tasks": [r for r in results if r is not None],
                          "seconds": round(time.perf_counter() - t0, 1)})


def _training_pairs(ds: eval_data.Dataset) -> pa.Table:
    return ds.pairs.filter(pa.array(~ds.is_test))


def stage_unseen(ds: eval_data.Dataset, cache, study: Study, configs: list[tuple[str, dict]]) -> None:
    """Per configuration: trained with every LLM, then per held-out LLM trained without it and
    its row fitted from N of its training-side records; accuracy on the test side's decisive pairs
    that involve it, the same pairs for both."""
    spec = load_transfer_spec(study.transfer)
    runs = study.out / "transfer.jsonl"
    train_pairs = _training_pairs(ds)
    test = eval_data.side(ds, test=True)
    for name, overrides in configs:
        config = router_config(overrides, study.encoder)
        todo = [llm for llm in spec.unseen_llms if f"unseen {llm} {name}" not in done_runs(runs)]
        if not todo:
            continue
        with_all, _ = train(config, train_pairs, cache)
        full = Scores(list(with_all.llm_names), with_all.score_matrix(test.prompts).astype(float))
        for llm in todo:
            t0 = time.perf_counter()
            row = {"name": f"unseen {llm} {name}", "stage": "unseen", "llm": llm, "config": name,
                   **_unseen(config, train_pairs, test, llm, full, cache, spec)}
            record(runs, row | {"seconds": round(time.perf_counter() - t0, 1)})


def _unseen(config, train_pairs: pa.Table, test, llm: str, full: Scores, cache, spec: TransferSpec) -> dict:
    a = np.asarray(train_pairs["model_a"].to_pylist(), dtype=object)
    b = np.asarray(train_pairs["model_b"].to_pylist(), dtype=object)
    involves = (a == llm) | (b == llm)
    without, _ = train(config, train_pairs.filter(pa.array(~involves)), cache)
    mine = train_pairs.filter(pa.array(involves))
    records = comparison_records(mine).of(llm)
    known = list(without.llm_names)
    among = {*known, llm}  # the pairs both routers can score
    trained_with = unseen_llm_accuracy(test, llm, full, among)
    out = {"records": len(records), "trained_with": _accuracy(trained_with), "added": {}, "records_level": {}}
    level = records_level(train_pairs.filter(pa.array(~involves)), records, llm, test, among, spec)
    for n in spec.unseen_records:
        draws = [_added(without, config, mine, records, llm, n, test, among, seed)
                 for seed in range(spec.unseen_draws)]
        added = mean_over_draws(draws)
        out["added"][str(n)] = _accuracy(added) | _paired(added, trained_with) | {"draws": len(draws)}
        out["records_level"][str(n)] = _accuracy(level[n]) | _paired(level[n], trained_with)
        out["added"][str(n)]["minus_records_level"] = added["accuracy"] - level[n]["accuracy"]
    return out


def stage_records_level(ds: eval_data.Dataset, study: Study) -> None:
    """The unseen-LLM stage's baseline alone (no router is trained): per held-out LLM, its accuracy
    on its test pairs when ranked by its records' level (`records_level`), against every LLM the
    training pairs without it name."""
    spec = load_transfer_spec(study.transfer)
    runs = study.out / "transfer.jsonl"
    train_pairs, test = _training_pairs(ds), eval_data.side(ds, test=True)
    for llm in spec.unseen_llms:
        if f"records level {llm}" in done_runs(runs):
            continue
        a = np.asarray(train_pairs["model_a"].to_pylist(), dtype=object)
        b = np.asarray(train_pairs["model_b"].to_pylist(), dtype=object)
        involves = (a == llm) | (b == llm)
        others = train_pairs.filter(pa.array(~involves))
        records = comparison_records(train_pairs.filter(pa.array(involves))).of(llm)
        among = {*others["model_a"].to_pylist(), *others["model_b"].to_pylist(), llm}
        level = records_level(others, records, llm, test, among, spec)
        record(runs, {"name": f"records level {llm}", "stage": "records_level", "llm": llm,
                      "records_level": {str(n): _accuracy(v) for n, v in level.items()}})


def records_level(others: pa.Table, records, llm: str, test, among: set[str], spec: TransferSpec,
                  ns: tuple[int, ...] | None = None) -> dict:
    """{N: accuracy} for each N of `ns` (default: the spec's unseen_records) of the baseline "rank a
    new LLM by its records": Bradley-Terry strengths of the known LLMs on the training pairs without
    it (decisive pairs, as `strength_given` reads records), and its own strength from N of its records
    against them (`strength_given`), prompt-agnostic; averaged over the same draws of records as
    `_added`."""
    bt = BradleyTerry().fit(None, None, others["model_a"].to_numpy(zero_copy_only=False),
                                       others["model_b"].to_numpy(zero_copy_only=False),
                                       others["label"].to_numpy())
    known = list(bt.strengths)
    out = {}
    for n in ns or spec.unseen_records:
        draws = []
        for seed in range(spec.unseen_draws):  # the draws of `_added`: same generator, same records
            rng = np.random.default_rng(seed)
            sub = records.take(np.sort(rng.choice(len(records), min(n, len(records)), replace=False)))
            theta = strength_given(sub, bt.strengths)
            row = np.array([*(bt.strengths[m] for m in known), theta])
            scores = Scores([*known, llm], np.broadcast_to(row, (len(test.prompts), len(row))).copy())
            draws.append(unseen_llm_accuracy(test, llm, scores, among))
        out[n] = mean_over_draws(draws)
    return out


def _added(without, config, mine: pa.Table, records, llm: str, n: int, test, among: set[str],
           seed: int) -> dict:
    """Accuracy on `llm`'s test pairs once its row is fitted from n of its records (draw `seed`)."""
    sub, own = _drawn(mine, records, llm, n, seed)
    vectors = without.prompt_vectors(list(sub.prompts))
    known = list(without.llm_names)
    table = without.llm_embeddings.detach().cpu().numpy()
    new_row = fit_llm_row(without.net.head.cpu(), vectors, sub, known, table, own_scores=own,
                          pointwise_weight=config.loss.pointwise_weight,
                          known_scores=known_scores(mine, known, sub.prompts))
    with_new = np.vstack([table, new_row])
    scores = Scores([*known, llm], without.score_matrix(test.prompts, llm_embeddings=with_new).astype(float))
    return unseen_llm_accuracy(test, llm, scores, among)


def _left_out(ds: eval_data.Dataset, source: str) -> eval_data.Dataset:
    """`source`'s test side with every other source's training side (leave one source out)."""
    mine = ds.source == source
    rows = np.flatnonzero((ds.is_test & mine) | (~ds.is_test & ~mine))
    return eval_data.Dataset(ds.pairs.take(pa.array(rows)), ds.source[rows], ds.prompts,
                             ds.prompt_idx[rows], ds.group, ds.is_test[rows])


def _source_left_out(ds: eval_data.Dataset, source: str):
    """(the dataset without `source`'s training side, its test side, `source`'s training-side pairs,
    their model_a and model_b as arrays): what the refit and new-source stages start from, the
    records of each LLM there being its rows of those pairs."""
    sub = _left_out(ds, source)
    there = ds.pairs.filter(pa.array(~ds.is_test & (ds.source == source)))
    a = np.asarray(there["model_a"].to_pylist(), dtype=object)
    b = np.asarray(there["model_b"].to_pylist(), dtype=object)
    return sub, eval_data.side(sub, test=True), there, a, b


def stage_refit(ds: eval_data.Dataset, cache, study: Study, configs: list[tuple[str, dict]],
                source: str = "scores_routerbench_subset", n: int = 200) -> None:
    """A known LLM whose level is wrong on a source the router never saw, re-fitted from n of its
    records there (`training.add_model --refit`). Train without `source` (as leave-one-source-out;
    RouterBench is the correctness source whose LLMs the judge sources also name), then per LLM that
    `source` shares with the others: its row re-fitted from n of its training-side records in
    `source`, the others' rows unchanged; accuracy on `source`'s test pairs that involve it, before
    and after (the same pairs, `unseen_draws` draws of records averaged), and Bradley-Terry on the
    same training rows."""
    spec = load_transfer_spec(study.transfer)
    runs = study.out / "transfer.jsonl"
    sub, test, there, a, b = _source_left_out(ds, source)
    train_pairs = _training_pairs(sub)
    bt = BradleyTerry().fit(None, None, train_pairs["model_a"].to_numpy(zero_copy_only=False),
                            train_pairs["model_b"].to_numpy(zero_copy_only=False),
                            train_pairs["label"].to_numpy())
    for name, overrides in configs:
        config = router_config(overrides, study.encoder)
        model = None
        for llm in sorted(set(a) | set(b)):
            key = f"refit {llm} on {source} {name}"
            if key in done_runs(runs):
                continue
            if model is None:
                model, _ = train(config, train_pairs, cache)
                known = list(model.llm_names)
                before_scores = Scores(known, model.score_matrix(test.prompts).astype(float))
                flat = np.array([bt.strengths.get(m, 0.0) for m in known])
                bt_scores = Scores(known, np.broadcast_to(flat, (len(test.prompts), len(known))).copy())
            if llm not in known:
                continue
            t0 = time.perf_counter()
            involves = (a == llm) | (b == llm)
            own = there.filter(pa.array(involves))
            records = comparison_records(own).of(llm)
            before = unseen_llm_accuracy(test, llm, before_scores, set(known))
            draws = [_refitted(model, config.loss.pointwise_weight, own, records, llm, n, test, seed)
                     for seed in range(spec.unseen_draws)]
            after = mean_over_draws(draws)
            pairs_only = mean_over_draws([_refitted(model, 0.0, own, records, llm, n, test, seed)
                                          for seed in range(spec.unseen_draws)])
            around = {w: mean_over_draws([_refitted(model, w, own, records, llm, n, test, seed,
                                                    around_own=True) for seed in range(spec.unseen_draws)])
                      for w in (config.loss.pointwise_weight, 0.0)}
            calibrated = mean_over_draws([_refitted(model, config.loss.pointwise_weight, own, records, llm, n,
                                                    test, seed, around_own=True, calibrate=True)
                                          for seed in range(spec.unseen_draws)])
            row = {"name": key, "stage": "refit", "llm": llm, "source": source, "config": name, "n": n,
                   "records": len(records), "before": _accuracy(before),
                   "refitted": _accuracy(after) | _paired(after, before),
                   "refitted_pairs_only": _accuracy(pairs_only) | _paired(pairs_only, before),
                   "around_own_row": _accuracy(around[config.loss.pointwise_weight])
                   | _paired(around[config.loss.pointwise_weight], before),
                   "around_own_row_pairs_only": _accuracy(around[0.0]) | _paired(around[0.0], before),
                   "around_own_row_calibrated": _accuracy(calibrated) | _paired(calibrated, before),
                   "bradley_terry": _accuracy(unseen_llm_accuracy(test, llm, bt_scores, set(known))),
                   "seconds": round(time.perf_counter() - t0, 1)}
            log.info("%s: before %.4f, re-fitted %.4f (pairs only %.4f; around its row %.4f, pairs only "
                     "%.4f), Bradley-Terry %.4f (%d pairs)", key, before["accuracy"], after["accuracy"],
                     pairs_only["accuracy"], around[config.loss.pointwise_weight]["accuracy"],
                     around[0.0]["accuracy"], row["bradley_terry"]["accuracy"], before["n_pairs"])
            record(runs, row)


NEW_SOURCE_FITS = ("as_they_are", "comparisons_only", "calibrated")  # `calibrated`: add_model now


def stage_new_source(ds: eval_data.Dataset, cache, study: Study, configs: list[tuple[str, dict]],
                     source: str = "scores_routerbench_subset", n: int = 200) -> None:
    """An LLM added from n records of a source the router never saw, as a user adds one from their
    own benchmark (records: per-model scores of the new LLM and of LLMs the router knows, on the same
    prompts). Train without `source` (as leave-one-source-out), then per LLM with records there: its
    row (removed, where the router knew it from other sources) fitted from n of its training-side
    records against the other rows, three ways: its own scores read as they are (`as_they_are`), its
    comparisons alone, and its own scores read against the known LLMs' scores on the same prompts
    (`calibrated`, `training.add_model` now); accuracy on `source`'s test pairs that involve it,
    `unseen_draws` draws averaged pair by pair."""
    spec = load_transfer_spec(study.transfer)
    runs = study.out / "transfer.jsonl"
    sub, test, there, a, b = _source_left_out(ds, source)
    for name, overrides in configs:
        config = router_config(overrides, study.encoder)
        model = None
        for llm in sorted(set(a) | set(b)):
            key = f"new from {source} {llm} {name}"
            if key in done_runs(runs):
                continue
            if model is None:
                train_pairs = _training_pairs(sub)
                model, _ = train(config, train_pairs, cache)
                names = list(model.llm_names)
                table = model.llm_embeddings.detach().cpu().numpy()
                ta = np.asarray(train_pairs["model_a"].to_pylist(), dtype=object)
                tb = np.asarray(train_pairs["model_b"].to_pylist(), dtype=object)
            t0 = time.perf_counter()
            own = there.filter(pa.array((a == llm) | (b == llm)))
            records = comparison_records(own).of(llm)
            others = [m for m in names if m != llm]
            rows = table[[names.index(m) for m in others]]
            fits = {fit: mean_over_draws([_new_from(model, rows, others, own, records, llm, n, test, seed,
                                                    fit, config.loss.pointwise_weight)
                                          for seed in range(spec.unseen_draws)]) for fit in NEW_SOURCE_FITS}
            without = train_pairs.filter(pa.array((ta != llm) & (tb != llm)))
            level = records_level(without, records, llm, test, {*others, llm}, spec, ns=(n,))[n]
            row = {"name": key, "stage": "new_source", "llm": llm, "source": source, "config": name, "n": n,
                   "known_elsewhere": llm in names, "records": len(records),
                   **{fit: _accuracy(r) for fit, r in fits.items()}, "records_level": _accuracy(level),
                   "calibrated_minus_records_level": _paired(fits["calibrated"], level),
                   "calibrated_minus_as_they_are": _paired(fits["calibrated"], fits["as_they_are"]),
                   "calibrated_minus_comparisons_only": _paired(fits["calibrated"], fits["comparisons_only"]),
                   "seconds": round(time.perf_counter() - t0, 1)}
            log.info("%s: as they are %.4f, comparisons only %.4f, calibrated %.4f, rank by its records %.4f "
                     "(%d pairs)", key, *(fits[f]["accuracy"] for f in NEW_SOURCE_FITS), level["accuracy"],
                     fits["calibrated"]["n_pairs"])
            record(runs, row)


def _new_from(model, rows: np.ndarray, others: list[str], own: pa.Table, records, llm: str, n: int, test,
              seed: int, fit: str, pointwise_weight: float) -> dict:
    """Accuracy on `llm`'s test pairs with its row fitted from n of its records (draw `seed`) the
    way `fit` (NEW_SOURCE_FITS) says, against the rows of `others`."""
    sub, mine = _drawn(own, records, llm, n, seed)
    weight = 0.0 if fit == "comparisons_only" else pointwise_weight
    calibration = known_scores(own, others, sub.prompts) if fit == "calibrated" else None
    new_row = fit_llm_row(model.net.head.cpu(), model.prompt_vectors(list(sub.prompts)), sub, others, rows,
                          own_scores=mine if weight else None, pointwise_weight=weight,
                          known_scores=calibration)
    with_new = np.vstack([rows, new_row])
    scores = Scores([*others, llm], model.score_matrix(test.prompts, llm_embeddings=with_new).astype(float))
    return unseen_llm_accuracy(test, llm, scores, {*others, llm})


def _refitted(model, pointwise_weight: float, own: pa.Table, records, llm: str, n: int, test,
              seed: int, around_own: bool = False, calibrate: bool = False) -> dict:
    """Accuracy on `llm`'s test pairs once its known row is re-fitted from n of its records (draw
    `seed`), as `training.add_model --refit` does: its own row neither opposes nor sets the prior;
    its own per-model scores weigh `pointwise_weight` (0: its comparisons alone); `around_own`: the
    prior is centred on its current row (records correct it) instead of the average LLM;
    `calibrate`: its own scores are read against the other LLMs' scores on the same prompts."""
    sub, scores_of_llm = _drawn(own, records, llm, n, seed)
    vectors = model.prompt_vectors(list(sub.prompts))
    names = list(model.llm_names)
    j = names.index(llm)
    table = model.llm_embeddings.detach().cpu().numpy()
    others = [m for m in names if m != llm]
    new_row = fit_llm_row(model.net.head.cpu(), vectors, sub, others, np.delete(table, j, axis=0),
                          own_scores=scores_of_llm if pointwise_weight else None,
                          pointwise_weight=pointwise_weight, prior_mean=table[j] if around_own else None,
                          known_scores=known_scores(own, others, sub.prompts) if calibrate else None)
    refitted = table.copy()
    refitted[j] = new_row
    scores = Scores(names, model.score_matrix(test.prompts, llm_embeddings=refitted).astype(float))
    return unseen_llm_accuracy(test, llm, scores, set(names))


def _drawn(pairs: pa.Table, records, llm: str, n: int, seed: int):
    """(draw `seed` of n of `llm`'s records, its own per-model scores on their prompts)."""
    rng = np.random.default_rng(seed)
    sub = records.take(np.sort(rng.choice(len(records), min(n, len(records)), replace=False)))
    rows, values = own_scores(pairs, llm, sub.prompts)
    sampled = np.isin(rows, np.unique(sub.prompt))  # its scores on the sampled records' prompts
    return sub, (rows[sampled], values[sampled])


def _paired(added: dict, trained_with: dict) -> dict:
    """Added minus trained-with accuracy on the same pairs, with a 95 % group-bootstrap interval."""
    if added["n_pairs"] != trained_with["n_pairs"] or not added["n_pairs"]:
        return {"minus_trained_with": added["accuracy"] - trained_with["accuracy"]}
    code, draws = boot_weights(added["group"], 1000, seed=0)
    return {"minus_trained_with": added["accuracy"] - trained_with["accuracy"],
            "minus_trained_with_ci": ratio_ci(added["credit"] - trained_with["credit"], code, draws)}


def _accuracy(result: dict) -> dict:
    return {"n_pairs": result["n_pairs"], "accuracy": result["accuracy"]}


def stage_loso(ds: eval_data.Dataset, cache, study: Study, configs: list[tuple[str, dict]],
               min_pairs: int = 1000) -> None:
    """Leave one source out: train on the other sources' training side, test on this source's
    test side, on the pairs whose two LLMs the training rows contain. Bradley-Terry is fitted on
    the same rows; it is the prompt-agnostic answer for LLMs it has seen elsewhere."""
    test = eval_data.side(ds, test=True)
    runs = study.out / "runs.jsonl"
    for config_name, overrides in configs:
        config = router_config(overrides, study.encoder)
        for src in sorted(np.unique(ds.source)):
            name = f"leave out {src} with {config_name}"
            done = done_runs(runs)
            if name in done or np.sum((test.source == src) & (test.label != 0)) < min_pairs:
                continue
            sub = _left_out(ds, src)
            model, seconds = train(config, _training_pairs(sub), cache)
            result = validate(model, sub, study.pair)
            if "pooled" not in result["pairs"]:
                log.info("%s: no test pair names two LLMs seen in other sources; nothing to measure", name)
                record(runs, {"name": name, "source": src, "config": config_name, "n_pairs": 0,
                              "seconds": round(seconds, 1)})
                continue
            record(runs, summarise(name, overrides, result, seconds) | {"source": src, "config": config_name})
