"""Transfer: how a router does where its training data says nothing about the LLMs or prompts.

Three tests, beside the in-distribution split of `training.evaluation.dataset`:

* **Domain transfer for an LLM pair.** A task is (source, benchmark family, strong LLM, weak LLM),
  e.g. RouterBench's Winogrande for gpt-4 vs Mixtral. A *fold* holds several tasks: half of the
  near-duplicate prompt groups of each task's (source, family) become test prompts (chosen by a
  hash, the same everywhere), and every label of each task's two LLMs on that (source, family) is
  removed from training, while the other LLMs' labels there stay: the router must know where the
  strong LLM gains from what the other LLMs' labels say about those prompts and from the two LLMs'
  labels elsewhere, as a user's traffic would demand. On the test prompts, routing by the score
  gap strong - weak gives APGR and CPT(50 %) with 95 % intervals resampling prompt groups.
* **Leave one source out**: train without a file, test on its pairs (`experiments/quality.py`).
* **Unseen LLM**: train without an LLM, add it back from N of its comparison records, and rank it
  on test prompts against the LLMs it meets there (`unseen_llm_rows`).

Tasks and families are data (`experiments/transfer.json`), not code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from routerdb.prompt_keys import digest
from training.evaluation import metrics
from training.evaluation.accuracy import credit as pair_credit
from training.evaluation.dataset import Dataset, Side
from training.evaluation.routing import strong_weak
from training.evaluation.scores import Scores

N_POINTS = 11  # decile routing curves, as training.evaluation.routing
BASELINES = ("random", "bradley_terry", "prompt_length", "knn", "matrix_factorization")


@dataclass(frozen=True)
class DomainTask:
    source: str  # the data file's stem
    family: str  # benchmark family (transfer.json "families"; a benchmark not listed is its own)
    strong: str
    weak: str

    @property
    def name(self) -> str:
        return f"{self.source.split('_')[1]}:{self.family}:{self.strong} > {self.weak}"


@dataclass(frozen=True)
class TransferSpec:
    families: dict[str, str]  # benchmark -> family
    folds: dict[str, tuple[DomainTask, ...]]
    unseen_llms: tuple[str, ...]
    unseen_records: tuple[int, ...]
    unseen_draws: int = 1  # random draws of the N records, averaged (pair by pair)


def load_transfer_spec(path: str | Path) -> TransferSpec:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    folds = {name: tuple(DomainTask(*task) for task in tasks) for name, tasks in raw["domain_folds"].items()}
    return TransferSpec(dict(raw["families"]), folds, tuple(raw["unseen_llms"]), tuple(raw["unseen_records"]),
                        int(raw.get("unseen_draws", 1)))


def families_of(ds: Dataset, families: dict[str, str]) -> np.ndarray:
    """[N] the benchmark family of each row (its `source` column is the benchmark of score files)."""
    bench = np.asarray(ds.pairs["source"].to_pylist(), dtype=object)
    return np.array([families.get(b, b) for b in bench], dtype=object)


def fold_dataset(ds: Dataset, fold: str, tasks: tuple[DomainTask, ...], families: dict[str, str]) -> Dataset:
    """`ds` for one fold: `is_test` marks the rows of the fold's test prompts, and the training
    rows that give a task's strong or weak LLM a label on its (source, family) are removed."""
    family = families_of(ds, families)
    row_group = ds.group[ds.prompt_idx]
    test_groups: set[int] = set()
    hidden = np.zeros(ds.pairs.num_rows, bool)
    a = np.asarray(ds.pairs["model_a"].to_pylist(), dtype=object)
    b = np.asarray(ds.pairs["model_b"].to_pylist(), dtype=object)
    for task in tasks:
        cell = (ds.source == task.source) & (family == task.family)
        # each group of the cell is a test group or not by a hash of (fold, task, group): seeded, stable
        test_groups |= {int(g) for g in np.unique(row_group[cell])
                        if digest(f"{fold}:{task.source}:{task.family}:{g}", 8)[0] % 2 == 0}
        hidden |= cell & np.isin(a, [task.strong, task.weak]) | cell & np.isin(b, [task.strong, task.weak])
    is_test = np.isin(row_group, list(test_groups))
    keep = np.flatnonzero(is_test | ~hidden)
    return Dataset(ds.pairs.take(pa.array(keep)), ds.source[keep], ds.prompts, ds.prompt_idx[keep], ds.group,
                   is_test[keep])


def task_side(test: Side, test_families: np.ndarray, task: DomainTask) -> Side:
    """The test side's rows of a task's (source, family); `test_families` [N] aligns with `test`
    (`families_of(ds, ...)[ds.is_test]`)."""
    return test.take((test.source == task.source) & (test_families == task.family))


def domain_result(test: Side, task: DomainTask, routers: dict[str, Scores], *, n_boot: int = 500,
                  seed: int = 0) -> dict | None:
    """APGR and CPT(50 %) of routing the task's test prompts by each router's gap strong - weak
    (and by the weak LLM's own score alone, for routers that score it), with 95 % intervals
    resampling near-duplicate groups; None when fewer than 10 test prompts have both LLMs' labels."""
    p, s_q, w_q = strong_weak(test, task.strong, task.weak)
    if p.size < 10:
        return None
    group_of = dict(zip(test.p.tolist(), test.group.tolist(), strict=True))
    group = np.array([group_of[i] for i in p.tolist()])
    out = {"task": task.name, "n_prompts": int(p.size), "strong_mean": float(s_q.mean()),
           "weak_mean": float(w_q.mean()), "routers": {}}
    for name, scores in routers.items():
        if task.strong not in scores.models or task.weak not in scores.models:
            continue
        strong = scores.matrix[p, scores.models.index(task.strong)]
        weak = scores.matrix[p, scores.models.index(task.weak)]
        diffs = {name: np.zeros(p.size) if name == "random" else strong - weak}
        if name not in BASELINES:
            diffs[f"{name} (weak LLM's score low)"] = -weak
        for label, d in diffs.items():
            out["routers"][label] = routing_numbers(s_q, w_q, d, group, n_boot=n_boot, seed=seed)
    return out


def routing_numbers(s_q: np.ndarray, w_q: np.ndarray, d: np.ndarray, group: np.ndarray, *,
                    n_boot: int, seed: int) -> dict:
    """APGR (with its 95 % group-bootstrap interval) and CPT(50 %) of routing by `d`."""
    def apgr(s, w, x):
        return metrics.apgr(s, w, x, n_points=N_POINTS)

    return {"apgr": apgr(s_q, w_q, d),
            "apgr_ci": metrics.bootstrap_ci(apgr, group, s_q, w_q, d, n_boot=n_boot, seed=seed),
            "cpt50": metrics.cpt(s_q, w_q, d, 0.5, n_points=N_POINTS)}


def mean_over_draws(results: list[dict]) -> dict:
    """One unseen_llm_accuracy result from several on the same pairs (e.g. rows fitted from
    different random draws of records): each pair's credit averaged over them."""
    credit = np.mean([r["credit"] for r in results], axis=0)
    return {**results[0], "accuracy": float(credit.mean()) if len(credit) else float("nan"), "credit": credit}


def unseen_llm_accuracy(test: Side, llm: str, scores: Scores, among: set[str] | None = None) -> dict:
    """Pairwise accuracy (equal scores half) on the test side's decisive pairs that involve `llm`
    (and whose other LLM is in `among`, where given, so that two routers compare on one set)."""
    rows = (test.label != 0) & ((test.a == llm) | (test.b == llm))
    t = test.take(rows)
    known = set(scores.models) & (set(scores.models) if among is None else among)
    t = t.take(np.array([x in known and y in known for x, y in zip(t.a, t.b, strict=True)], bool))
    credit = pair_credit(scores.diff(t.p, t.a, t.b), t.label)
    return {"n_pairs": int(len(t.label)), "accuracy": float(credit.mean()) if len(credit) else float("nan"),
            "credit": credit, "group": t.group}
