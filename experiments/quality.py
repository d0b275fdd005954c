"""`python -m experiments.quality`: the experiments behind docs/quality.md, on one fixed split.

    python -m experiments.quality --stage ablate    # head-only ablations on the validation split
    python -m experiments.quality --stage lora      # frozen vs LoRA on a subsample
    python -m experiments.quality --stage loso      # leave-one-source-out
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
from pathlib import Path

import numpy as np
import pyarrow as pa

from training import evaluate as ev
from training.data.splits import split_by_prompt
from training.encoder.prompt_cache import PromptCache, attach
from training.evaluation import dataset as eval_data
from training.specs import DEFAULT_TRUNCATION, LoRA, RouterConfig

log = logging.getLogger("experiments.quality")

DATA_DIR = Path("../shared/data")
OUT = Path("build/quality")
DOCS = Path("docs/quality")
CACHE_ROOT = Path("build/cache")
THRESHOLD = 0.95  # cosine at which two prompts count as one
TEST_SPLIT, VAL_SPLIT = (0.2, 0), (0.15, 1)
PAIR = ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")  # the RouterBench strong / weak pair
ENCODER = ev.DEFAULT_ENCODER  # the frozen encoder of the split, the baselines and the router
TRUNCATION = DEFAULT_TRUNCATION  # what it keeps of a prompt over 128 tokens (routerdb/tokenizer.py)

# The starting point of the ablations; each ablation changes one thing.
BASE = {"finetuning": {"kind": "frozen", "lr": 1e-3}, "epochs": 3, "batch_size": 256, "progress": False,
        "use_prompt_features": True, "loss": "margin_ranking", "ties": "ignore", "prompt_weighting": "pairs"}
ABLATIONS: list[tuple[str, dict]] = [
    ("base: frozen MiniLM, features, margin ranking, ties ignored, every pair x1", {}),
    ("truncation: head (the first 128 tokens)", {"encoder": {"truncation": "head"}}),
    ("head: + linear LLM strength", {"head": {"llm_strength": True}}),
    ("epochs: 6", {"epochs": 6}),
    ("no prompt features", {"use_prompt_features": False}),
    ("loss: Bradley-Terry", {"loss": "bradley_terry"}),
    ("ties: half a win each", {"ties": "half"}),
    ("weighting: sqrt(pairs) per prompt", {"prompt_weighting": "sqrt"}),
    ("weighting: every prompt x1", {"prompt_weighting": "prompts"}),
    ("head: [512, 128]", {"head": {"hidden_dims": [512, 128]}}),
    ("loss: Bradley-Terry, ties: half a win each", {"loss": "bradley_terry", "ties": "half"}),
    ("LLM strength, 6 epochs", {"head": {"llm_strength": True}, "epochs": 6}),
    ("Bradley-Terry, ties half, LLM strength, 6 epochs",
     {"loss": "bradley_terry", "ties": "half", "head": {"llm_strength": True}, "epochs": 6}),
    ("Bradley-Terry, ties half, LLM strength", {"loss": "bradley_terry", "ties": "half",
                                                "head": {"llm_strength": True}}),
    ("Bradley-Terry, ties half, 6 epochs", {"loss": "bradley_terry", "ties": "half", "epochs": 6}),
    ("Bradley-Terry, ties half, sqrt(pairs) per prompt",
     {"loss": "bradley_terry", "ties": "half", "prompt_weighting": "sqrt"}),
    # capacity and optimisation around the tie-aware spec
    ("tie-aware sqrt, head [512, 128], LLM embedding 64",
     {"loss": "bradley_terry", "ties": "half", "prompt_weighting": "sqrt",
      "head": {"hidden_dims": [512, 128]}, "embedding_spec": {"kind": "learned", "dim": 64}}),
    ("tie-aware sqrt, lr 3e-3", {"loss": "bradley_terry", "ties": "half", "prompt_weighting": "sqrt",
                                 "finetuning": {"kind": "frozen", "lr": 3e-3}}),
    ("tie-aware sqrt, dropout 0.3", {"loss": "bradley_terry", "ties": "half", "prompt_weighting": "sqrt",
                                     "head": {"dropout": 0.3}}),
]


def embedding_kind_ablations() -> list[tuple[str, dict]]:
    """The phase-1 LLM embedding kinds of training/embeddings.py, where this checkout has them."""
    import typing

    from training import specs

    kinds = [typing.get_args(m.model_fields["kind"].annotation)[0]
             for m in typing.get_args(typing.get_args(specs.EmbeddingSpec)[0])]
    # "attention" is left out: its phase 1 took several times longer than "frozen" on this CPU
    return [(f"LLM embedding: {k} records (phase 1)", {"embedding_spec": {"kind": k, "dim": 32}})
            for k in kinds if k == "frozen"]


# --- data ---------------------------------------------------------------------------------------


def load(data_dir: Path = DATA_DIR):
    """(dataset with the test split, cache, embed function) over every file of `data_dir`."""
    files = sorted(str(p) for p in data_dir.glob("*.parquet"))
    table, source = eval_data.load_files(files, str(data_dir / "model_aliases.json"))
    cache = PromptCache.for_encoder(ENCODER, 128, CACHE_ROOT, truncation=TRUNCATION)

    def embed(prompts):
        cache.fill(prompts)
        return cache.lookup(prompts)

    return eval_data.build_dataset(table, source, embed, TEST_SPLIT, THRESHOLD), cache, embed


def train_side(ds: eval_data.Dataset, split=VAL_SPLIT) -> eval_data.Dataset:
    """The training side of `ds`, with its own validation groups marked as is_test."""
    rows = np.flatnonzero(~ds.is_test)
    sub = eval_data.Dataset(ds.pairs.take(pa.array(rows)), ds.source[rows], ds.prompts,
                            ds.prompt_idx[rows], ds.group, np.zeros(len(rows), bool))
    if split is None:
        return sub
    index = pa.table({"row": np.arange(len(rows))})
    _, val = split_by_prompt(index, split[0], split[1], groups=ds.group[sub.prompt_idx])
    sub.is_test[val["row"].to_numpy()] = True
    return sub


def fit_pairs(ds: eval_data.Dataset) -> pa.Table:
    return ds.pairs.filter(pa.array(~ds.is_test))


# --- training a router --------------------------------------------------------------------------


def router_config(overrides: dict) -> RouterConfig:
    encoder = {"max_length": 128, "truncation": TRUNCATION, **overrides.get("encoder", {}), "name": ENCODER}
    merged = {**BASE, **overrides, "encoder": encoder}
    return RouterConfig.model_validate(merged)


def cached_model(config: RouterConfig, cache: PromptCache | None):
    """A TransformerEmbeddingModel whose frozen encoder is replaced by cache look-ups."""
    from training.model.router import TransformerEmbeddingModel

    model = TransformerEmbeddingModel(config)
    if cache is not None and config.finetuning.kind == "frozen":
        if cache.truncation != config.encoder.truncation:  # e.g. the truncation ablation
            cache = PromptCache(cache.directory, cache.encoder, cache.max_length, config.encoder.truncation)
        attach(model, cache)
    return model


def train(config: RouterConfig, pairs: pa.Table, cache: PromptCache | None):
    model = cached_model(config, cache)
    t0 = time.perf_counter()
    model.train(pairs, validation_split=None)
    return model, time.perf_counter() - t0


def validate(model, ds: eval_data.Dataset, n_boot: int = 200) -> dict:
    """Router vs Bradley-Terry (fitted on the same training rows) on `ds`'s test side."""
    val, fit = eval_data.side(ds, test=True), eval_data.side(ds, test=False)
    known = set(model.model_names)
    val = val.take(np.array([a in known and b in known for a, b in zip(val.a, val.b, strict=True)], bool))
    router = ev.Scores(list(model.model_names), model.score_matrix(val.prompts).astype(np.float64))
    bt = ev.BradleyTerry().fit(None, None, fit.a, fit.b, fit.label)
    bt_models = list(bt.models_)
    bt_scores = ev.Scores(bt_models, bt.score(None, np.ones(len(val.prompts)), bt_models))
    routers = {ev.ROUTER: router, ev.BT: bt_scores}
    val = val.take(ev.common_rows(val, routers))
    out = ev.pair_metrics(val, routers, n_boot=n_boot)
    return {"pairs": out, "routing": ev.routing_results(val, routers, [PAIR], n_boot=50)}


def summarise(name: str, overrides: dict, result: dict, seconds: float) -> dict:
    pooled = result["pairs"]["pooled"]["routers"][ev.ROUTER]
    row = {"name": name, "overrides": overrides, "seconds": round(seconds, 1),
           "accuracy": pooled["accuracy"], "minus_bt": pooled["minus_bt"],
           "minus_bt_ci": pooled["minus_bt_ci"],
           "shuffle_drop": pooled["shuffle_drop"], "log_loss": pooled["log_loss"],
           "per_source": {s: e["routers"][ev.ROUTER]["minus_bt"] for s, e in result["pairs"].items()
                          if s != "pooled"},
           "n_pairs": result["pairs"]["pooled"]["n_pairs"]}
    if result["routing"]:
        row["apgr"] = result["routing"][0]["routers"][ev.ROUTER]["apgr"]
    return row


def done_runs(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["name"]: r for r in rows}


def record(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    if not row.get("n_pairs"):
        return
    log.info("%s: accuracy %.4f, minus BT %+.2f points [%+.2f, %+.2f], shuffle drop %.2f (%.0fs)",
             row["name"], row["accuracy"], 100 * row["minus_bt"], 100 * row["minus_bt_ci"][0],
             100 * row["minus_bt_ci"][1], 100 * row["shuffle_drop"], row["seconds"])


# --- stages ---------------------------------------------------------------------------------------


def stage_ablate(ds, cache, runs: Path, extra: list[tuple[str, dict]] = (),
                 with_embedding_kinds: bool = True) -> None:
    """One run per ablation (skipping runs already recorded), then the phase-1 LLM embedding kind
    "frozen" where this checkout has it (~10 min: it trains an embedding model first)."""
    tv = train_side(ds)
    pairs = fit_pairs(tv)
    done = done_runs(runs)
    kinds = embedding_kind_ablations() if with_embedding_kinds else []
    for name, overrides in [*ABLATIONS, *kinds, *extra]:
        if name in done:
            continue
        model, seconds = train(router_config(overrides), pairs, cache)
        record(runs, summarise(name, overrides, validate(model, tv), seconds))


def stage_lora(ds, cache, runs: Path, n_prompts: int = 1000, epochs: int = 2) -> None:
    """Frozen vs LoRA on the same subsample of training prompts (LoRA runs the encoder with
    gradients for every step: ~10 prompts/s here, so all 30k training prompts are out of reach)."""
    tv = train_side(ds)
    pairs = fit_pairs(tv)
    prompts = sorted(set(pairs["prompt"].to_pylist()))
    rng = np.random.default_rng(0)
    keep = set(rng.choice(prompts, size=min(n_prompts, len(prompts)), replace=False).tolist())
    sub = pairs.filter(pa.array([p in keep for p in pairs["prompt"].to_pylist()]))
    done = done_runs(runs)
    for name, overrides in (
        (f"subsample {n_prompts} prompts: frozen", {"epochs": epochs}),
        (f"subsample {n_prompts} prompts: LoRA r8", {"epochs": epochs, "finetuning": LoRA().model_dump()}),
    ):
        if name in done:
            continue
        config = router_config(overrides)
        model, seconds = train(config, sub, cache if config.finetuning.kind == "frozen" else None)
        record(runs, summarise(name, overrides, validate(model, tv), seconds))


# Leave-one-source-out is also run with these ablation configurations, to tell whether the
# recommended spec's choices (loss, ties, weighting) are what costs or gains on an unseen source.
LOSO_CONFIGS = ("base: frozen MiniLM, features, margin ranking, ties ignored, every pair x1",
                "loss: Bradley-Terry, ties: half a win each")


def stage_loso(ds, cache, runs: Path, min_pairs: int = 1000) -> None:
    """Leave one source out: train on the other sources' training side, test on this source's
    test side, on the pairs whose two LLMs the training rows contain. Bradley-Terry is fitted on
    the same rows; it is the prompt-agnostic answer for LLMs it has seen elsewhere. Run with the
    recommended spec, then with each of LOSO_CONFIGS."""
    configs = [("", recommended_overrides())] + [(f" with {n}", o) for n, o in ABLATIONS if n in LOSO_CONFIGS]
    test = eval_data.side(ds, test=True)
    for suffix, overrides in configs:
        config = router_config(overrides)
        for src in sorted(np.unique(ds.source)):
            name = f"leave out {src}{suffix}"
            done = done_runs(runs)
            if name in done or np.sum((test.source == src) & (test.label != 0)) < min_pairs:
                continue
            if suffix and done.get(f"leave out {src}", {}).get("n_pairs") == 0:
                continue  # no test pair names two LLMs seen elsewhere: nothing to measure, whatever the spec
            mine = ds.source == src
            rows = np.flatnonzero((ds.is_test & mine) | (~ds.is_test & ~mine))
            sub = eval_data.Dataset(ds.pairs.take(pa.array(rows)), ds.source[rows], ds.prompts,
                                    ds.prompt_idx[rows], ds.group, ds.is_test[rows])
            model, seconds = train(config, fit_pairs(sub), cache)
            result = validate(model, sub)
            if "pooled" not in result["pairs"]:
                log.info("%s: no test pair names two LLMs seen in other sources; nothing to measure", name)
                record(runs, {"name": name, "source": src, "n_pairs": 0, "seconds": round(seconds, 1)})
                continue
            row = summarise(name, overrides if suffix else {}, result, seconds)
            row["source"], row["config"] = src, suffix.removeprefix(" with ") or "recommended"
            record(runs, row)


def recommended_overrides(path: Path = Path("examples/specs/router.json")) -> dict:
    """The RouterConfig fields of the recommended spec (data and output removed)."""
    spec = json.loads(path.read_text())
    skip = ("data", "output")  # the encoder's name is ENCODER's (router_config): the one the cache holds
    return {k: v for k, v in spec.items() if k not in skip} | {"progress": False}


def train_with_validation(config: RouterConfig, fit: pa.Table, val: pa.Table, cache):
    """As TransformerEmbeddingModel.train, with our own near-duplicate-aware validation pairs."""
    from routerdb.features import FeatureStats, compute_features
    from training.trainer.loop import fit_loop

    model = cached_model(config, cache)
    both = pa.concat_tables([fit, val])
    names = sorted(set(both["model_a"].to_pylist()) | set(both["model_b"].to_pylist()))
    stats = FeatureStats.fit(compute_features(sorted(set(fit["prompt"].to_pylist())))) \
        if config.use_prompt_features else None
    model._build(names, stats)
    t0 = time.perf_counter()
    model.history = fit_loop(model, fit, val)
    return model, time.perf_counter() - t0


def stage_final(ds, cache, embed, out: Path = OUT, docs: Path = DOCS, n_boot: int = 1000) -> dict:
    """Train the recommended spec on the fit part of the training side (validation curves on the
    rest), export its bundle, and evaluate the bundle through routerdb on the test side."""
    from training.evaluation.report import write_report
    from training.export import export_bundle

    tv = train_side(ds)
    config = router_config(recommended_overrides())
    val = tv.pairs.filter(pa.array(tv.is_test))
    model, seconds = train_with_validation(config, fit_pairs(tv), val, cache)
    test_prompts = eval_data.side(ds, test=True).prompts
    bundle = export_bundle(model, out / "bundle", test_prompts[:64], spec=config.model_dump(mode="json"))
    t0 = time.perf_counter()
    router = ev.bundle_scores(bundle, test_prompts)
    score_seconds = time.perf_counter() - t0
    results = ev.evaluate(ds, router, embed, pairs=[PAIR], n_boot=n_boot)
    results["command"] = "python -m experiments.quality --stage final"
    results["train_seconds"], results["score_seconds"] = seconds, score_seconds
    sizes = np.bincount(ds.group)
    results["groups"] = {"prompts": len(ds.prompts), "groups": int(np.count_nonzero(sizes)),
                         "largest": sorted(sizes.tolist(), reverse=True)[:3], "truncation": TRUNCATION}
    write_report(results, docs, bundle=bundle)
    (out / "final.json").write_text(json.dumps(results, default=float))
    return results


def main(argv: list[str] | None = None) -> int:
    global ENCODER, OUT, DOCS, CACHE_ROOT, THRESHOLD
    parser = argparse.ArgumentParser(prog="python -m experiments.quality", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["ablate", "lora", "loso", "final", "docs", "all"], default="all")
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    parser.add_argument("--encoder", default=ENCODER, help="(for dry runs with a tiny encoder)")
    parser.add_argument("--out", default=str(OUT), help="runs, bundle and final results")
    parser.add_argument("--docs", default="docs", help="where quality.md and quality/ are written")
    parser.add_argument("--cache-root", default=str(CACHE_ROOT))
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="near-duplicate cosine")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    ENCODER, OUT, CACHE_ROOT = args.encoder, Path(args.out), Path(args.cache_root)
    THRESHOLD = args.threshold
    DOCS = Path(args.docs) / "quality"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    torch.set_num_threads(args.threads)  # a head-only step is small: extra threads mostly wait
    runs = OUT / "runs.jsonl"
    if args.stage != "docs":
        ds, cache, embed = load(Path(args.data_dir))
        stages = ["ablate", "lora", "loso", "final"] if args.stage == "all" else [args.stage]
        for stage in stages:
            log.info("stage %s", stage)
            if stage == "final":
                stage_final(ds, cache, embed, OUT, DOCS)
            else:
                {"ablate": stage_ablate, "lora": stage_lora, "loso": stage_loso}[stage](ds, cache, runs)
    from experiments.quality_docs import write_docs

    write_docs(runs, OUT / "final.json", Path(args.docs) / "quality.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
