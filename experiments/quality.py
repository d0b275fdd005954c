"""`python -m experiments.quality`: the experiments behind docs/quality.md, on one fixed split.

    python -m experiments.quality --stage ablate    # head-only ablations on the validation split
    python -m experiments.quality --stage lora      # frozen vs LoRA on a subsample
    python -m experiments.quality --stage loso      # leave-one-source-out
    python -m experiments.quality --stage refit     # a known LLM re-fitted on a left-out source
    python -m experiments.quality --stage new_source  # a new LLM added from a left-out source's records
    python -m experiments.quality --stage final     # recommended spec: bundle + test report + docs
    python -m experiments.quality                   # all of them, in that order (`make quality`)

The split is `training.evaluation.dataset`'s: near-duplicate prompt groups (cosine >= 0.95 between frozen
all-MiniLM-L6-v2 embeddings), 20 % of the groups held out as the *test* side (seed 0) over all of
../shared/data at once (aliases applied). Every decision is made on a *validation* side, 15 % of
the training side's groups (seed 1); the test side is used once, by the final stage.

Frozen-encoder runs read prompt vectors from `training.encoder.prompt_cache` (build/cache/), so a run
trains only the head: minutes, not hours. Results are appended to build/quality/runs.jsonl and a
configuration already there is not run again (delete the file to start over).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from experiments.quality_docs import write_docs
from experiments.study import (
    TRUNCATION,
    Study,
    cached_model,
    done_runs,
    fit_pairs,
    load,
    recommended_overrides,
    record,
    router_config,
    summarise,
    train,
    train_side,
    validate,
)
from experiments.transfer_study import (
    stage_domain,
    stage_loso,
    stage_new_source,
    stage_records_level,
    stage_refit,
    stage_unseen,
)
from training import specs
from training.evaluate import evaluate
from training.evaluation import dataset as eval_data
from training.evaluation.report import write_report
from training.evaluation.scores import bundle_scores
from training.export import export_bundle
from training.specs import DEFAULT_ENCODER, LoRA, RouterConfig

log = logging.getLogger("experiments.quality")

# Each ablation changes one thing from experiments.study.BASE.
# The previous recommended spec: the mlp head, Bradley-Terry loss, ties half, sqrt(pairs) per prompt.
TIE_AWARE = {"loss": "bradley_terry", "ties": "half", "prompt_weighting": "sqrt"}
ABLATIONS: list[tuple[str, dict]] = [
    ("base: frozen MiniLM, features, margin ranking, ties ignored, every pair x1", {}),
    ("truncation: head (the first 128 tokens)", {"encoder": {"truncation": "head"}}),
    ("no prompt features", {"use_prompt_features": False}),
    ("Bradley-Terry, ties half, sqrt(pairs) per prompt", TIE_AWARE),
    ("mlp, tie-aware, + pointwise loss", {**TIE_AWARE, "pointwise_weight": 1.0}),
]


def embedding_kind_ablations() -> list[tuple[str, dict]]:
    """The phase-1 LLM embedding kinds (training/llm_embeddings/embedder.py), where this checkout has
    them."""
    kinds = [typing.get_args(m.model_fields["kind"].annotation)[0]
             for m in typing.get_args(typing.get_args(specs.EmbeddingSpec)[0])]
    # "attention" is left out: its phase 1 took several times longer than "frozen" on this CPU
    return [(f"LLM embedding: {k} records (phase 1)", {"embedding_spec": {"kind": k, "dim": 32}})
            for k in kinds if k == "frozen"]


# --- data ---------------------------------------------------------------------------------------


# --- training a router --------------------------------------------------------------------------


def stage_ablate(ds, cache, study: Study, extra: list[tuple[str, dict]] = (),
                 with_embedding_kinds: bool = False) -> None:
    """One run per ablation and transfer candidate (skipping runs already recorded); with
    `with_embedding_kinds`, also the phase-1 LLM embedding kind "frozen" (~10 min: it trains an
    embedding model first; docs/embeddings.md has its numbers)."""
    tv = train_side(ds)
    pairs = fit_pairs(tv)
    runs = study.out / "runs.jsonl"
    done = done_runs(runs)
    kinds = embedding_kind_ablations() if with_embedding_kinds else []
    for name, overrides in [*ablations(), *kinds, *extra]:
        if name in done or (study.only and name not in study.only):
            continue
        model, seconds = train(router_config(overrides, study.encoder), pairs, cache)
        record(runs, summarise(name, overrides, validate(model, tv, study.pair), seconds))


def stage_lora(ds, cache, study: Study, n_prompts: int = 1000, epochs: int = 2) -> None:
    """Frozen vs LoRA on the same subsample of training prompts (LoRA runs the encoder with
    gradients for every step: ~10 prompts/s here, so all 30k training prompts are out of reach)."""
    tv = train_side(ds)
    pairs = fit_pairs(tv)
    prompts = sorted(set(pairs["prompt"].to_pylist()))
    rng = np.random.default_rng(0)
    keep = set(rng.choice(prompts, size=min(n_prompts, len(prompts)), replace=False).tolist())
    sub = pairs.filter(pa.array([p in keep for p in pairs["prompt"].to_pylist()]))
    runs = study.out / "runs.jsonl"
    done = done_runs(runs)
    for name, overrides in (
        (f"subsample {n_prompts} prompts: frozen", {"epochs": epochs}),
        (f"subsample {n_prompts} prompts: LoRA r8", {"epochs": epochs, "finetuning": LoRA().model_dump()}),
    ):
        if name in done:
            continue
        config = router_config(overrides, study.encoder)
        model, seconds = train(config, sub, cache if config.finetuning.kind == "frozen" else None)
        record(runs, summarise(name, overrides, validate(model, tv, study.pair), seconds))


# Leave-one-source-out is also run with these ablation configurations, to tell whether the
# recommended spec's choices (loss, ties, weighting) are what costs or gains on an unseen source.
def train_with_validation(config: RouterConfig, fit: pa.Table, val: pa.Table, cache):
    """As TransformerEmbeddingModel.train, with our own near-duplicate-aware validation pairs."""
    model = cached_model(config, cache)
    t0 = time.perf_counter()
    model.train(fit, validation_data=val)
    return model, time.perf_counter() - t0


def stage_final(ds, cache, embed, study: Study, n_boot: int = 1000) -> dict:
    """Train the recommended spec on the fit part of the training side (validation curves on the
    rest), export its bundle, and evaluate the bundle through routerdb on the test side."""
    out, docs = study.out, study.docs / "quality"
    tv = train_side(ds)
    config = router_config(recommended_overrides(), study.encoder)
    val = tv.pairs.filter(pa.array(tv.is_test))
    model, seconds = train_with_validation(config, fit_pairs(tv), val, cache)
    test_prompts = eval_data.side(ds, test=True).prompts
    bundle = export_bundle(model, out / "bundle", test_prompts[:64], spec=config.model_dump(mode="json"))
    t0 = time.perf_counter()
    router = bundle_scores(bundle, test_prompts)
    score_seconds = time.perf_counter() - t0
    results = evaluate(ds, router, embed, pairs=[study.pair], n_boot=n_boot)
    results["command"] = "python -m experiments.quality --stage final"
    results["train_seconds"], results["score_seconds"] = seconds, score_seconds
    sizes = np.bincount(ds.group)
    results["groups"] = {"prompts": len(ds.prompts), "groups": int(np.count_nonzero(sizes)),
                         "largest": sorted(sizes.tolist(), reverse=True)[:3], "truncation": TRUNCATION}
    write_report(results, docs, bundle=bundle)
    (out / "final.json").write_text(json.dumps(results, default=float))
    return results


# IRT: ability - difficulty(p) + skills . loadings(p), fitted on per-model scores (pointwise) and
# on pairs (judge pairs only, or all), a Bradley-Terry scale per source (training/model/heads.py)
IRT = {"head": {"kind": "irt", "skills": 8}, "embedding_spec": {"kind": "learned", "dim": 9},
       "loss": "bradley_terry", "ties": "half", "prompt_weighting": "sqrt", "pointwise_weight": 1.0,
       "source_scale": True}
COVERAGE = {"head": {"kind": "irt", "skills": 8, "coverage": True},
            "embedding_spec": {"kind": "learned", "dim": 18}}
TRANSFER_CANDIDATES: list[tuple[str, dict]] = [
    ("irt8, pointwise + judge pairs", {**IRT, "pair_sources": "pairwise"}),
    ("irt8, pointwise + all pairs", {**IRT, "pair_sources": "all"}),
    ("irt8 coverage (measured level), pointwise + all pairs", {**IRT, **COVERAGE, "pair_sources": "all"}),
    ("irt8 coverage (measured level), pointwise + judge pairs",
     {**IRT, **COVERAGE, "pair_sources": "pairwise"}),
    ("irt8 coverage, Bradley-Terry level, pointwise + all pairs",
     {**IRT, **COVERAGE, "head": {**COVERAGE["head"], "bradley_terry_level": True}, "pair_sources": "all"}),
]


def prior_candidate(alpha: float, learned: float) -> tuple[str, dict]:
    """Round 2 (issue 18): the recommended irt8 with the ridge difficulty prior of strength `alpha`
    (training/model/difficulty.py) under its learned difficulty, scaled by `learned`."""
    name = f"irt8 + ridge difficulty prior (alpha {alpha:g}), learned difficulty x{learned:g}"
    head = {"kind": "irt", "skills": 8, "difficulty_prior": alpha, "learned_difficulty": learned}
    return name, {**IRT, "pair_sources": "all", "head": head}


PRIOR_ALPHA = 1.0  # chosen by experiments/difficulty_study.py (the prior alone, domain stage)
TRANSFER_CANDIDATES += [prior_candidate(PRIOR_ALPHA, learned) for learned in (1.0, 0.3, 0.0)]

# The fast tier (issue 19): the recommended spec with the static encoder distilled from the study's
# encoder, its table frozen (a head-only run, about a minute here), with the prompt features
# (tests/experiments/test_quality.py holds it equal to examples/specs/router-fast.json). Measured on
# the validation side, not kept as candidates: the table tuned (29 min a run here) without
# features, and frozen without features (docs/quality-history.md, "The fast tier").
FAST = "fast tier: static encoder, distilled table, prompt features (router-fast.json)"
TRANSFER_CANDIDATES.append((FAST, {**IRT, "pair_sources": "all", "use_prompt_features": True,
                                   "encoder": {"kind": "static", "static_dims": 256},
                                   "finetuning": {"kind": "frozen", "lr": 0.001}}))


def ablations() -> list[tuple[str, dict]]:
    """The validation-side runs: every transfer candidate (in distribution), then the ablations."""
    return [*TRANSFER_CANDIDATES, *ABLATIONS]


# examples/specs/router.json before the transfer work: the mlp head with TIE_AWARE (the same
# RouterConfig; tests/experiments/test_quality.py checks it against that spec's fields).
PREVIOUS = ("mlp head (the spec before the transfer work)", TIE_AWARE)
# Round 2 (issue 18): the round-1 recommended spec with the head's dropout 0.1 -> 0.3, better on
# every transfer stage (docs/quality-history.md, "Round 2").
DROPOUT = "irt8, pointwise + all pairs, head dropout 0.3"
TRANSFER_CANDIDATES.append((DROPOUT, {**IRT, "pair_sources": "all",
                                      "head": {"kind": "irt", "skills": 8, "dropout": 0.3}}))
# Round 2: that spec serving a ridge difficulty prior (alpha 0.1) in place of its learned
# difficulty after training (training/model/difficulty.py): every ranking of LLMs as trained, the
# score gaps of a pair follow difficulty learned from pooled correctness.
SERVED = "irt8, head dropout 0.3, served ridge difficulty (alpha 0.1)"
TRANSFER_CANDIDATES.append((SERVED, {**IRT, "pair_sources": "all",
                                     "head": {"kind": "irt", "skills": 8, "dropout": 0.3,
                                              "served_difficulty": 0.1}}))
# ... only off the prompts the learned difficulty was taught on (a logistic gate: prompts like the
# per-model-score prompts keep the learned difficulty, prompts like the pairwise-only ones get the prior)
GATED = "irt8, head dropout 0.3, served ridge difficulty (alpha 0.1) off the scored prompts"
TRANSFER_CANDIDATES.append((GATED, {**IRT, "pair_sources": "all",
                                    "head": {"kind": "irt", "skills": 8, "dropout": 0.3,
                                             "served_difficulty": 0.1, "served_difficulty_gate": True}}))
# ... and the skills held at their mean on prompts the gate reads as pairwise-only (chat)
SKILLS_GATED = ("irt8, head dropout 0.3, served ridge difficulty (alpha 0.1) and skills held off the "
                "scored prompts")
TRANSFER_CANDIDATES.append((SKILLS_GATED, {**IRT, "pair_sources": "all",
                                           "head": {"kind": "irt", "skills": 8, "dropout": 0.3,
                                                    "served_difficulty": 0.1, "served_difficulty_gate": True,
                                                    "served_skills_gate": True}}))
# ... with a gate of one hidden layer (64 ReLU units), which reads short benchmark questions as
# scored where the logistic gate reads them as chat (LLMRouter's open QA under domain transfer)
SKILLS_GATED_MLP = SKILLS_GATED + ", MLP gate"
TRANSFER_CANDIDATES.append((SKILLS_GATED_MLP, {
    **IRT, "pair_sources": "all",
    "head": {"kind": "irt", "skills": 8, "dropout": 0.3, "served_difficulty": 0.1,
             "served_difficulty_gate": True, "served_skills_gate": True, "served_gate_hidden": 64}}))
# ... with the logistic gate, the skills held only where it is sure a prompt is chat (its logit + 3
# before the skills gate's x3: held below a gate of about 0.05), so a benchmark question the gate
# hesitates on keeps its skill term
SKILLS_GATED_SURE = SKILLS_GATED + ", only where sure"
TRANSFER_CANDIDATES.append((SKILLS_GATED_SURE, {
    **IRT, "pair_sources": "all",
    "head": {"kind": "irt", "skills": 8, "dropout": 0.3, "served_difficulty": 0.1,
             "served_difficulty_gate": True, "served_skills_gate": True, "served_skills_gate_offset": 3.0}}))
# The candidate examples/specs/router.json is (tests/experiments/test_quality.py holds them equal).
RECOMMENDED = SKILLS_GATED_SURE


# What the transfer stages run by default: the two shipped specs (examples/specs/router.json and
# router-fast.json). Each costs about 25 min of transfer runs here (domain 6, leave one source out
# 6, unseen LLMs 12), so every other candidate is run by naming it: `--only NAME`.
SHIPPED = (RECOMMENDED, FAST)


def transfer_configs(only: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """The configurations the transfer stages compare: the shipped specs; with `only`, those named
    there (any candidate, or the previous spec)."""
    named = only or SHIPPED
    return [(name, o) for name, o in [PREVIOUS, *TRANSFER_CANDIDATES] if name in named]


STAGES = {
    "domain": lambda ds, cache, embed, study: stage_domain(ds, cache, embed, study,
                                                           transfer_configs(study.only)),
    "unseen": lambda ds, cache, embed, study: stage_unseen(ds, cache, study, transfer_configs(study.only)),
    "records_level": lambda ds, cache, embed, study: stage_records_level(ds, study),
    "ablate": lambda ds, cache, embed, study: stage_ablate(ds, cache, study),
    "lora": lambda ds, cache, embed, study: stage_lora(ds, cache, study),
    "loso": lambda ds, cache, embed, study: stage_loso(ds, cache, study, transfer_configs(study.only)),
    "refit": lambda ds, cache, embed, study: stage_refit(ds, cache, study,
                                                         transfer_configs(study.only or (RECOMMENDED,))),
    "new_source": lambda ds, cache, embed, study: stage_new_source(
        ds, cache, study, transfer_configs(study.only or (RECOMMENDED,))),
    "final": stage_final,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.quality", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=[*STAGES, "docs", "all"], default="all")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="(for dry runs with a tiny encoder)")
    parser.add_argument("--out", default="build/quality", help="runs, bundle and final results")
    parser.add_argument("--docs", default="docs", help="where quality.md and quality/ are written")
    parser.add_argument("--cache-root", default="build/cache")
    parser.add_argument("--threshold", type=float, default=0.95, help="near-duplicate cosine")
    parser.add_argument("--pair", default="gpt-4-1106-preview:mixtral-8x7b-instruct-v0.1",
                        help="STRONG:WEAK LLMs of the routing curve")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this configuration (repeatable; 'baselines' for the domain baselines)")
    args = parser.parse_args(argv)
    strong, _, weak = args.pair.partition(":")
    study = Study(Path(args.data_dir), Path(args.out), Path(args.docs), Path(args.cache_root), args.encoder,
                  args.threshold, (strong, weak), only=tuple(args.only))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)  # a head-only step is small: extra threads mostly wait
    if args.stage != "docs":
        ds, cache, embed = load(study)
        for stage in STAGES if args.stage == "all" else [args.stage]:
            log.info("stage %s", stage)
            STAGES[stage](ds, cache, embed, study)
    write_docs(study.out / "runs.jsonl", study.out / "final.json", study.docs / "quality.md",
               transfer_path=study.out / "transfer.jsonl", recommended_name=RECOMMENDED,
               candidates=tuple(name for name, _ in TRANSFER_CANDIDATES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
