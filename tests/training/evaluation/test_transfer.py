"""training.evaluation.transfer: folds that hide an LLM pair's labels on a benchmark family, the
routing numbers on the hidden prompts, and the accuracy of an unseen LLM, on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from tests.paths import REPO
from training.data import concat_pairs
from training.evaluation import dataset as eval_data
from training.evaluation import metrics
from training.evaluation.scores import Scores
from training.evaluation.transfer import (
    DomainTask,
    domain_result,
    families_of,
    fold_dataset,
    load_transfer_spec,
    mean_over_draws,
    task_side,
    unseen_llm_accuracy,
)

FAMILIES = {"gsm8k": "math", "math": "math", "mmlu": "knowledge"}
TASK = DomainTask("scores_x", "math", "S", "W")


def _dataset(n_prompts: int = 40) -> eval_data.Dataset:
    """Every prompt scored for S, W and O (as pairs), half gsm8k / half mmlu, in file scores_x;
    plus one judge file with the same prompts. S is right on every prompt, W on the even ones."""
    rows = []
    for i in range(n_prompts):
        bench = "gsm8k" if i < n_prompts // 2 else "mmlu"
        q = {"S": 1.0, "W": float(i % 2 == 0), "O": float(i % 3 == 0)}
        for a, b in (("O", "S"), ("O", "W"), ("S", "W")):
            rows.append({"prompt": f"p{i}", "model_a": a, "model_b": b, "label": int(np.sign(q[a] - q[b])),
                         "source": bench, "score_a": q[a], "score_b": q[b]})
    table = concat_pairs([pa.Table.from_pylist(rows)])
    source = np.array(["scores_x"] * table.num_rows, dtype=object)
    prompts, idx = np.unique(table["prompt"].to_pylist(), return_inverse=True)
    return eval_data.Dataset(table, source, list(prompts), idx, np.arange(len(prompts)),
                             np.zeros(table.num_rows, bool))


def test_a_fold_hides_the_pair_on_its_family_and_tests_half_of_it():
    ds = _dataset()
    fds = fold_dataset(ds, "A", (TASK,), FAMILIES)
    family = families_of(fds, FAMILIES)
    a, b = (np.asarray(fds.pairs[c].to_pylist(), dtype=object) for c in ("model_a", "model_b"))
    in_cell = family == "math"
    train_cell = in_cell & ~fds.is_test
    assert not np.any(train_cell & np.isin(a, ["S", "W"]) | train_cell & np.isin(b, ["S", "W"]))
    assert np.all(fds.is_test <= in_cell)  # test prompts come from the task's family only
    test_prompts = set(fds.prompt_idx[fds.is_test])
    assert 0 < len(test_prompts) < 20  # about half of the family's 20 prompt groups
    assert np.sum(fds.is_test) == 3 * len(test_prompts)  # every pair of a test prompt is kept
    knowledge = families_of(ds, FAMILIES) == "knowledge"
    assert np.sum(family == "knowledge") == np.sum(knowledge)  # other families untouched
    again = fold_dataset(ds, "A", (TASK,), FAMILIES)
    assert np.array_equal(again.is_test, fds.is_test)  # the same split every time
    assert not np.array_equal(fold_dataset(ds, "B", (TASK,), FAMILIES).is_test, fds.is_test)


def test_routing_numbers_on_the_hidden_prompts():
    ds = _dataset(n_prompts=80)
    fds = fold_dataset(ds, "A", (TASK,), FAMILIES)
    test = eval_data.side(fds, test=True)
    side = task_side(test, families_of(fds, FAMILIES)[fds.is_test], TASK)
    n = len(side.prompts)
    even = np.array([int(p[1:]) % 2 == 0 for p in side.prompts])
    # S gains exactly where W is wrong (the odd prompts): an oracle router, and a constant one
    oracle = Scores(["S", "W"], np.stack([np.ones(n), np.where(even, 1.0, 0.0)], 1))
    constant = Scores(["S", "W"], np.tile([0.5, 0.0], (n, 1)))
    result = domain_result(side, TASK, {"oracle": oracle, "bradley_terry": constant}, n_boot=50)
    assert result["n_prompts"] == n and result["strong_mean"] == 1.0
    assert result["weak_mean"] == pytest.approx(even.mean())
    assert result["routers"]["bradley_terry"]["apgr"] == pytest.approx(0.5)  # a constant gap: random
    s_q, w_q = np.ones(n), even.astype(float)
    assert result["routers"]["oracle"]["apgr"] == pytest.approx(
        metrics.apgr(s_q, w_q, s_q - w_q, n_points=11))
    # by hand: half the prompts gain 1; sent first, quality climbs 0.5 -> 1 over the first half and
    # stays: area 0.375 + 0.5 = 0.875, APGR (0.875 - 0.5) / (1 - 0.5) = 0.75
    assert result["routers"]["oracle"]["apgr"] == pytest.approx(0.75, abs=0.02)
    low = result["routers"]["oracle (weak LLM's score low)"]  # routing by W's score alone: the same
    assert low["apgr"] == pytest.approx(result["routers"]["oracle"]["apgr"])
    assert "bradley_terry (weak LLM's score low)" not in result["routers"]
    ci = result["routers"]["oracle"]["apgr_ci"]
    assert ci[0] <= result["routers"]["oracle"]["apgr"] <= ci[1]


def test_too_few_hidden_prompts_give_no_result():
    ds = _dataset(n_prompts=8)
    test = eval_data.side(fold_dataset(ds, "A", (TASK,), FAMILIES), test=True)
    scores = Scores(["S", "W"], np.zeros((len(test.prompts), 2)))
    assert domain_result(test, TASK, {"r": scores}) is None


def test_unseen_llm_accuracy_counts_its_decisive_pairs():
    ds = _dataset(n_prompts=4)
    ds.is_test[:] = True
    test = eval_data.side(ds, test=True)
    # p0: S=W=1 (tie, left out), O=1; p1: W wrong; p2: W right, O wrong; p3: W wrong, O right
    scores = Scores(["O", "S", "W"], np.tile([0.0, 1.0, 0.5], (4, 1)))  # S > W > O everywhere
    got = unseen_llm_accuracy(test, "W", scores)
    # W's decisive pairs: p1 S>W, p1 O=W (tie: no), p2 W>O, p3 S>W, p3 O>W -> S>W right twice,
    # W>O right once, O>W wrong once: 3 of 4
    assert got["n_pairs"] == 4 and got["accuracy"] == pytest.approx(0.75)
    among = unseen_llm_accuracy(test, "W", scores, among={"S", "W"})  # only W's pairs with S: both right
    assert among["n_pairs"] == 2 and among["accuracy"] == 1.0


def test_draws_are_averaged_pair_by_pair():
    ds = _dataset(n_prompts=4)
    ds.is_test[:] = True
    test = eval_data.side(ds, test=True)
    right = unseen_llm_accuracy(test, "W", Scores(["O", "S", "W"], np.tile([0.0, 1.0, 0.5], (4, 1))))
    flipped = unseen_llm_accuracy(test, "W", Scores(["O", "S", "W"], np.tile([1.0, 0.0, 0.5], (4, 1))))
    # flipped: O > W > S everywhere -> S>W pairs wrong twice, W>O wrong, O>W right: 1 of 4
    assert flipped["accuracy"] == pytest.approx(0.25)
    both = mean_over_draws([right, flipped])
    np.testing.assert_allclose(both["credit"], [0.5, 0.5, 0.5, 0.5])  # each pair right in one draw of two
    assert both["accuracy"] == pytest.approx(0.5) and both["n_pairs"] == 4
    assert list(both["group"]) == list(right["group"])


def test_the_shipped_transfer_tasks_load():
    spec = load_transfer_spec(REPO / "experiments" / "transfer.json")
    tasks = [t for fold in spec.folds.values() for t in fold]
    assert len(tasks) >= 8 and all(t.strong != t.weak for t in tasks)
    assert set(spec.unseen_records) >= {50, 200, 1000} and spec.unseen_draws >= 3
    assert json.loads((REPO / "experiments" / "transfer.json").read_text())["families"]["gsm8k"] == "math"
