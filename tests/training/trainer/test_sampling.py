"""Batches and sample balancing: inverse frequency of the pair's rarer LLM, drawn with
WeightedRandomSampler, shares logged before and after, validation never balanced."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests import tiny_models
from training.data import read as data_mod
from training.data.splits import split_by_prompt
from training.router import TransformerEmbeddingModel
from training.specs import Frozen, ValidationSplit
from training.trainer import sampling


def test_balanced_weights_are_the_inverse_count_of_the_rarer_llm():
    a, b = np.array([0, 0, 0, 1]), np.array([1, 2, 2, 2])  # appearances: LLM 0: 3, 1: 2, 2: 4
    np.testing.assert_allclose(sampling.balanced_weights(a, b, 4), [1 / 2, 1 / 3, 1 / 3, 1 / 2])


def test_shares_before_and_after_balancing():
    # LLM "r" is in 2 of 20 pairs; the others split the rest.
    a = np.array([0] * 10 + [1] * 8 + [2] * 2)
    b = np.array([1] * 10 + [0] * 8 + [0] * 2)
    names = ["x", "y", "r"]
    before = sampling.model_shares(a, b, names)
    assert before == pytest.approx({"x": 0.5, "y": 0.45, "r": 0.05})
    after = sampling.model_shares(a, b, names, sampling.balanced_weights(a, b, 3))
    assert sum(after.values()) == pytest.approx(1.0)
    # x-y pairs weigh 1/18 each (18 of them), r-x pairs 1/2 each (2): x 2, y 1, r 1 of 4
    assert after == pytest.approx({"x": 0.5, "y": 0.25, "r": 0.25})


def test_balanced_batches_draw_with_weighted_random_sampler(monkeypatch):
    calls = []
    original = torch.utils.data.WeightedRandomSampler

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "WeightedRandomSampler", spy)
    batches = sampling.balanced_batches(np.array([0.0, 1.0, 0.0]), 2, torch.Generator().manual_seed(0))
    assert calls and calls[0]["replacement"] is True and calls[0]["num_samples"] == 3
    assert [len(x) for x in batches] == [2, 1]
    assert np.concatenate(batches).tolist() == [1, 1, 1]  # weight 0 is never drawn


def test_balanced_batches_are_seeded():
    w = np.random.default_rng(0).random(50)
    one = sampling.balanced_batches(w, 8, torch.Generator().manual_seed(3))
    two = sampling.balanced_batches(w, 8, torch.Generator().manual_seed(3))
    assert all(np.array_equal(x, y) for x, y in zip(one, two, strict=True))


def test_prompt_batches_keep_prompts_whole_and_use_every_row_once():
    p = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4])
    batches = sampling.prompt_batches(p, 4, torch.Generator().manual_seed(0))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(p)))
    seen = [set(p[b]) for b in batches]
    assert all(not (x & y) for i, x in enumerate(seen) for y in seen[i + 1:])
    assert all(len(b) >= 4 for b in batches[:-1])


def imbalanced_scores() -> pa.Table:
    """The synthetic scores, with the 'weak' LLM scored on one prompt in six."""
    table = tiny_models.synthetic_scores(60)
    keep = [m != "weak" or int(pid[1:]) % 6 == 0
            for m, pid in zip(table["model"].to_pylist(), table["prompt_id"].to_pylist(), strict=True)]
    return table.filter(pa.array(keep))


def test_training_logs_shares_and_validation_is_never_balanced(tiny_encoders, caplog):
    model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), finetuning=Frozen(), epochs=1,
                                      batch_size=16, balance_model_samples=True, progress=False)
    with caplog.at_level(logging.INFO, logger="training.trainer.loop"):
        history = model.train(imbalanced_scores(), validation_split=ValidationSplit(0.3, 0))
    lines = [r.getMessage() for r in caplog.records if "share of training pairs" in r.getMessage()]
    assert [line.split(" balancing")[0].rsplit(" ", 1)[-1] for line in lines] == ["before", "after"]
    share = {line.split(" balancing")[0].rsplit(" ", 1)[-1]: float(line.split("weak ")[1].split("%")[0])
             for line in lines}
    assert share["after"] > share["before"]
    # Validation accuracy is the plain (unweighted) pairwise accuracy on every decisive pair.
    pairs = data_mod.load_pairs(imbalanced_scores())
    _, val = split_by_prompt(pairs, 0.3, 0)
    val = val.filter(pa.array(val["label"].to_numpy() != 0))
    prompts = sorted(set(val["prompt"].to_pylist()))
    scores = model.score_matrix(prompts)
    row = {p: i for i, p in enumerate(prompts)}
    col = {m: j for j, m in enumerate(model.llm_names)}
    rows = [row[p] for p in val["prompt"].to_pylist()]
    diff = (scores[rows, [col[m] for m in val["model_a"].to_pylist()]]
            - scores[rows, [col[m] for m in val["model_b"].to_pylist()]]) * val["label"].to_numpy()
    plain = float(np.mean((diff > 0) + 0.5 * (diff == 0)))
    assert history[-1]["val_accuracy"] == pytest.approx(plain, abs=1e-6)
