"""One digest of prompt text for the Router's cache and training's ids and splits, pinned to its
bytes (a change would move every prompt-disjoint split); distinct values in first-seen order."""

from __future__ import annotations

import numpy as np

from routerdb.prompt_keys import digest, distinct
from training.data.columns import prompt_hash
from training.data.splits import held_out


def test_digest_is_blake2b_of_the_utf8_text():
    assert digest("What is 2 + 2?").hex() == "75c8e3c325068a1f7905cee1648820c2"
    assert digest("What is 2 + 2?", 8).hex() == "ea4a029fd2c7331b"
    assert digest("\ud800", 8).hex() == "4208783e927d0d68"  # a lone surrogate hashes, not raises


def test_training_prompt_ids_and_splits_use_the_digest():
    assert prompt_hash("What is 2 + 2?") == "hea4a029fd2c7331b"
    keys = [f"prompt {i}" for i in range(10)]
    order = sorted(keys, key=lambda k: int.from_bytes(digest(f"7\x1f{k}", 8), "big"))
    assert [k for k, out in zip(keys, held_out(keys, 0.3, 7), strict=True) if out] == sorted(
        order[:3], key=keys.index)


def test_distinct_keeps_first_seen_order():
    values, codes = distinct(["b", "a", None, "b", None])
    assert values == ["b", "a", None]
    np.testing.assert_array_equal(codes, [0, 1, 2, 0, 2])
    assert codes.dtype == np.int64
    assert distinct([])[0] == [] and distinct([])[1].shape == (0,)

