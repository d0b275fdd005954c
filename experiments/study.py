"""What every stage of the quality study shares: where it reads and writes (`Study`), the data
and its split, training a router on cached prompt vectors, and the runs file."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from training.data.splits import split_by_prompt
from training.encoder.prompt_cache import PromptCache
from training.evaluation import dataset as eval_data
from training.evaluation.accuracy import common_rows, pair_metrics
from training.evaluation.baselines import BradleyTerry
from training.evaluation.routing import routing_results
from training.evaluation.scores import BT, ROUTER, Scores
from training.router import TransformerEmbeddingModel
from training.specs import DEFAULT_TRUNCATION, RouterConfig, migrate_flat_loss

log = logging.getLogger("experiments.study")

TEST_SPLIT, VAL_SPLIT = (0.2, 0), (0.15, 1)
LEVELS = "router levels"  # validate's third router: each LLM's mean router score, prompt-agnostic
TRUNCATION = DEFAULT_TRUNCATION  # what the encoder keeps of a prompt over 128 tokens (routerdb/tokenizer.py)
# The starting point of every configuration the study trains: head-only on the frozen encoder.
BASE = {"finetuning": {"kind": "frozen", "lr": 1e-3}, "epochs": 3, "batch_size": 256, "progress": False,
        "use_prompt_features": True, "loss": "margin_ranking", "ties": "ignore", "prompt_weighting": "pairs"}


@dataclass(frozen=True)
class Study:
    """Where the study reads and writes, from the command line (`main`)."""

    data_dir: Path  # the comparison data: every *.parquet there, with model_aliases.json
    out: Path  # runs.jsonl, the final bundle and results
    docs: Path  # quality.md and quality/ (plots, report)
    cache_root: Path  # frozen prompt vectors (training.encoder.prompt_cache)
    encoder: str  # the frozen encoder of the split, the baselines and the router
    threshold: float  # cosine at which two prompts count as one
    pair: tuple[str, str]  # the strong / weak LLMs of the routing curve
    transfer: Path = Path("experiments/transfer.json")  # domain-transfer tasks, unseen LLMs
    only: tuple[str, ...] = ()  # run only these configurations (and "baselines"); empty: all

def load(study: Study):
    """(dataset with the test split, cache, embed function) over every file of the data folder."""
    files = sorted(str(p) for p in study.data_dir.glob("*.parquet"))
    table, source = eval_data.load_files(files, str(study.data_dir / "model_aliases.json"))
    cache = PromptCache.for_encoder(study.encoder, 128, study.cache_root, truncation=TRUNCATION)
    embed = cache.vectors
    return eval_data.build_dataset(table, source, embed, TEST_SPLIT, study.threshold), cache, embed


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


# --- training a router ------------------------------------------------------------------


def router_config(overrides: dict, encoder_name: str) -> RouterConfig:
    encoder = {"max_length": 128, "truncation": TRUNCATION, **overrides.get("encoder", {}),
               "name": encoder_name}
    merged = {**BASE, **overrides, "encoder": encoder}
    # configurations are flat overrides, the loss settings at the top level as when these studies
    # were first run; they are nested into `loss` here (training.specs.migrate_flat_loss)
    return RouterConfig.model_validate(migrate_flat_loss(merged))


def cached_model(config: RouterConfig, cache: PromptCache | None):
    """A TransformerEmbeddingModel whose frozen encoder's vectors are read from the cache."""
    model = TransformerEmbeddingModel(config)
    # the cache holds the study's transformer's vectors; a static encoder embeds its prompts itself
    if cache is not None and config.finetuning.kind == "frozen" and config.encoder.kind == "transformer":
        if cache.truncation != config.encoder.truncation:  # e.g. the truncation ablation
            cache = PromptCache(cache.directory, cache.encoder, cache.max_length, config.encoder.truncation)
        model.frozen_vectors = cache.vectors
    return model


def train(config: RouterConfig, pairs: pa.Table, cache: PromptCache | None):
    model = cached_model(config, cache)
    t0 = time.perf_counter()
    model.train(pairs, validation_split=None)
    return model, time.perf_counter() - t0


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


def recommended_overrides(path: Path = Path("examples/specs/router.json")) -> dict:
    """The RouterConfig fields of the recommended spec (data and output removed)."""
    spec = json.loads(path.read_text())
    skip = ("data", "output")  # the encoder's name is the study's (router_config): the one the cache holds
    return {k: v for k, v in spec.items() if k not in skip} | {"progress": False}


def validate(model, ds: eval_data.Dataset, pair: tuple[str, str], n_boot: int = 200) -> dict:
    """Router vs Bradley-Terry (fitted on the same training rows) on `ds`'s test side."""
    val, fit = eval_data.side(ds, test=True), eval_data.side(ds, test=False)
    known = set(model.llm_names)
    val = val.take(np.array([a in known and b in known for a, b in zip(val.a, val.b, strict=True)], bool))
    router = Scores(list(model.llm_names), model.score_matrix(val.prompts).astype(np.float64))
    bt = BradleyTerry().fit(None, None, fit.a, fit.b, fit.label)
    bt_models = list(bt.models_)
    bt_scores = Scores(bt_models, bt.score(None, np.ones(len(val.prompts)), bt_models))
    # the router's own prompt-agnostic levels: each LLM's mean score over these prompts
    levels = Scores(router.models, np.broadcast_to(router.matrix.mean(0), router.matrix.shape).copy())
    routers = {ROUTER: router, BT: bt_scores, LEVELS: levels}
    val = val.take(common_rows(val, routers))
    out = pair_metrics(val, routers, n_boot=n_boot)
    return {"pairs": out, "routing": routing_results(val, {ROUTER: router, BT: bt_scores}, [pair], n_boot=50)}


def summarise(name: str, overrides: dict, result: dict, seconds: float) -> dict:
    pooled = result["pairs"]["pooled"]["routers"][ROUTER]
    row = {"name": name, "overrides": overrides, "seconds": round(seconds, 1),
           "accuracy": pooled["accuracy"], "minus_bt": pooled["minus_bt"],
           "minus_bt_ci": pooled["minus_bt_ci"],
           "shuffle_drop": pooled["shuffle_drop"], "log_loss": pooled["log_loss"],
           "per_source": {s: e["routers"][ROUTER]["minus_bt"] for s, e in result["pairs"].items()
                          if s != "pooled"},
           "n_pairs": result["pairs"]["pooled"]["n_pairs"]}
    levels = result["pairs"]["pooled"]["routers"].get(LEVELS)
    if levels is not None:  # the router's prompt-agnostic levels, minus BT
        row["levels_minus_bt"], row["levels_minus_bt_ci"] = levels["minus_bt"], levels["minus_bt_ci"]
    if result["routing"]:
        row["apgr"] = result["routing"][0]["routers"][ROUTER]["apgr"]
    return row


# --- stages ---------------------------------------------------------------------------------------
