"""Tests for training/data/splits.py: prompt-disjoint splits, near-duplicate groups, counts, filters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from training.data.read import load_pairs
from training.data.splits import drop_rare_models, model_counts, near_duplicate_groups, split_by_prompt

# ---------------------------------------------------------------- split


def prompts_table(prompts: list[str]) -> pa.Table:
    rows = [
        {"prompt": p, "model_a": "a", "model_b": "b", "winner": "model_a", "prompt_id": str(i)}
        for i, p in enumerate(prompts)
    ]
    return load_pairs(pa.Table.from_pylist(rows))


def test_split_is_prompt_disjoint_with_normalised_text():
    variants = ["Hello  world", " hello world\n", "HELLO WORLD", "Straße", "STRASSE"]
    others = [f"question {i}" for i in range(60)]
    pairs = prompts_table(variants + others + others)  # every 'other' prompt twice
    for seed in range(10):
        train, val = split_by_prompt(pairs, 0.3, seed)
        assert train.num_rows + val.num_rows == pairs.num_rows
        train_p, val_p = set(train["prompt"].to_pylist()), set(val["prompt"].to_pylist())
        assert not train_p & val_p
        assert set(variants[:3]) <= train_p or set(variants[:3]) <= val_p
        assert set(variants[3:]) <= train_p or set(variants[3:]) <= val_p  # casefold: ß == ss
        assert len({" ".join(p.split()).casefold() for p in val_p}) == round(0.3 * 62)


def test_split_is_seeded_and_stable():
    pairs = prompts_table([f"question {i}" for i in range(20)])
    _, val = split_by_prompt(pairs, 0.25, seed=7)
    again = split_by_prompt(pairs, 0.25, seed=7)[1]
    assert val["prompt"].to_pylist() == again["prompt"].to_pylist()
    # pinned: blake2b of (seed, key) is the same on every machine and Python version
    assert sorted(val["prompt"].to_pylist()) == [
        "question 16",
        "question 17",
        "question 18",
        "question 5",
        "question 9",
    ]
    other = split_by_prompt(pairs, 0.25, seed=8)[1]
    assert other["prompt"].to_pylist() != val["prompt"].to_pylist()


def test_split_by_groups_and_bad_arguments():
    pairs = prompts_table([f"question {i}" for i in range(6)])
    groups = np.array([0, 0, 0, 1, 1, 2])
    train, val = split_by_prompt(pairs, 0.5, seed=0, groups=groups)
    side = {p: "val" for p in val["prompt"].to_pylist()} | {p: "train" for p in train["prompt"].to_pylist()}
    by_group = [{side[f"question {i}"] for i in np.flatnonzero(groups == g)} for g in range(3)]
    assert all(len(s) == 1 for s in by_group)
    with pytest.raises(ValueError, match=r"groups has shape \(2,\); allowed: one value per row"):
        split_by_prompt(pairs, 0.5, seed=0, groups=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"fraction=1\.5; allowed: 0 < fraction < 1"):
        split_by_prompt(pairs, 1.5, seed=0)
    with pytest.raises(ValueError, match="1 distinct prompt"):
        split_by_prompt(prompts_table(["same"] * 3), 0.5, seed=0)


# ---------------------------------------------------------------- near duplicates


def test_near_duplicate_groups_hand_made():
    emb = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.98, 0.2, 0.0],  # cos 0.98 with row 0
            [0.0, 0.0, 5.0],  # alone (scale does not matter)
            [0.92, 0.39, 0.0],  # cos ~0.98 with row 1, ~0.92 with row 0: joins transitively
            [0.0, 0.0, 0.0],  # zero vector: alone
            [0.0, 0.1, 2.0],  # cos ~0.9988 with row 2
        ]
    )
    assert near_duplicate_groups(emb, 0.95).tolist() == [0, 0, 1, 0, 2, 1]
    assert near_duplicate_groups(emb, 0.999).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="finite"):
        near_duplicate_groups(np.array([[np.nan, 1.0]]))


def test_near_duplicate_groups_across_blocks():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5000, 64)).astype(np.float32)  # random: cos << 0.95
    emb[4990] = emb[10] * 2  # pairs that straddle the blocks of rows
    emb[4999] = emb[4990] + 1e-3
    emb[3000] = emb[20]
    groups = near_duplicate_groups(emb)
    assert groups[10] == groups[4990] == groups[4999] and groups[20] == groups[3000]
    assert len(np.unique(groups)) == 5000 - 3


# ---------------------------------------------------------------- counts


def chain_pairs() -> pa.Table:
    rows = [("a", "b")] * 5 + [("a", "c")] * 2 + [("c", "d")] + [("b", "c")]
    table = [
        {"prompt": f"q{i}", "model_a": a, "model_b": b, "winner": "model_a"} for i, (a, b) in enumerate(rows)
    ]
    return load_pairs(pa.Table.from_pylist(table))


def test_model_counts():
    assert model_counts(chain_pairs()) == {"a": 7, "b": 6, "c": 4, "d": 1}


def test_drop_rare_models_repeats_until_stable():
    kept, dropped = drop_rare_models(chain_pairs(), 4)
    # dropping d leaves c with 3 comparisons, so c goes too
    assert dropped == ["c", "d"]
    assert model_counts(kept) == {"a": 5, "b": 5}
    same, none = drop_rare_models(chain_pairs(), 1)
    assert none == [] and same.num_rows == 9
