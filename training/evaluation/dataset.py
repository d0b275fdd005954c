"""The evaluated data of `training.evaluate`: files -> one pairs table, near-duplicate split, sides.

`build_dataset` groups prompts as near-duplicates (cosine >= threshold between frozen encoder
embeddings, transitively) and splits the groups with `training.data.splits.split_by_prompt`, over all
files at once; `side` turns one side of the split into arrays the metrics read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from routerdb.prompt_keys import distinct
from training.data import read as data_mod
from training.data.aliases import load_aliases
from training.data.splits import near_duplicate_groups, split_by_prompt

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """All pairs of the evaluated files, indexed by distinct prompt."""

    pairs: pa.Table  # PAIRS_SCHEMA rows
    source: np.ndarray  # [N] the file stem of each row
    prompts: list[str]  # distinct prompt texts
    prompt_idx: np.ndarray  # [N] row -> prompts
    group: np.ndarray  # [P] near-duplicate group of each prompt
    is_test: np.ndarray  # [N] bool


def load_files(paths: Sequence[str], aliases: str | None) -> tuple[pa.Table, np.ndarray]:
    """One pairs table over every file and the file stem of each row (its source)."""
    mapping = load_aliases(aliases) if aliases else None
    tables, sources = [], []
    for path in paths:
        table = data_mod.load_pairs(path, aliases=mapping)
        tables.append(table)
        sources.append(np.full(table.num_rows, Path(str(path)).stem, dtype=object))
    return data_mod.concat_pairs(tables), np.concatenate(sources)


def parse_split(text: str) -> tuple[float, int] | None:
    if text == "none":
        return None
    try:
        fraction, seed = text.split(":")
        return float(fraction), int(seed)
    except ValueError:
        raise ValueError(f"--split {text!r}; allowed: FRACTION:SEED (e.g. 0.2:0) or none") from None


def build_dataset(pairs: pa.Table, source: np.ndarray, embeddings, split: tuple[float, int] | None,
                  threshold: float = 0.95) -> Dataset:
    """Index prompts, group near-duplicates and mark the test rows.

    `embeddings(prompts) -> [P, D]` gives frozen encoder vectors (a `PromptCache.lookup`)."""
    prompts, prompt_idx = distinct(pairs["prompt"].to_pylist())
    if split is None:
        group = np.arange(len(prompts))
        return Dataset(pairs, source, prompts, prompt_idx, group, np.ones(pairs.num_rows, bool))
    group = near_duplicate_groups(embeddings(prompts), threshold)
    log.info("%d distinct prompts in %d near-duplicate groups (cosine >= %g)", len(prompts),
             len(np.unique(group)), threshold)
    rows = pa.table({"row": np.arange(pairs.num_rows)})
    _, test = split_by_prompt(rows, split[0], split[1], groups=group[prompt_idx])
    is_test = np.zeros(pairs.num_rows, bool)
    is_test[test["row"].to_numpy()] = True
    return Dataset(pairs, source, prompts, prompt_idx, group, is_test)


@dataclass
class Side:
    """One side of the split as arrays: pairs point into this side's own prompt list."""

    prompts: list[str]
    p: np.ndarray  # [N] index into prompts
    a: np.ndarray  # [N] LLM names
    b: np.ndarray
    label: np.ndarray  # [N] +1 / -1 / 0
    source: np.ndarray  # [N]
    group: np.ndarray  # [N] near-duplicate group of the pair's prompt
    score_a: np.ndarray  # [N] per-model score data, else nan
    score_b: np.ndarray
    cost_a: np.ndarray
    cost_b: np.ndarray

    def take(self, keep: np.ndarray) -> Side:
        fields = {k: v[keep] for k, v in vars(self).items() if k != "prompts"}
        return Side(prompts=self.prompts, **fields)


def side(ds: Dataset, test: bool) -> Side:
    rows = np.flatnonzero(ds.is_test == test)
    used, p = np.unique(ds.prompt_idx[rows], return_inverse=True)
    t = ds.pairs.take(pa.array(rows))

    def num(col):
        return np.asarray(t[col].to_numpy(zero_copy_only=False), dtype=np.float64)

    return Side(prompts=[ds.prompts[i] for i in used], p=p,
                a=np.asarray(t["model_a"].to_pylist(), dtype=object),
                b=np.asarray(t["model_b"].to_pylist(), dtype=object),
                label=t["label"].to_numpy().astype(np.int64), source=ds.source[rows],
                group=ds.group[ds.prompt_idx[rows]], score_a=num("score_a"), score_b=num("score_b"),
                cost_a=num("cost_a"), cost_b=num("cost_b"))
