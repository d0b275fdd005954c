"""Loss weights per training pair: prompt weighting, source weights, ties as half wins."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from training.trainer.pairs import PairArrays
from training.trainer.sampling import pair_weights

P = np.array([0, 0, 0, 0, 1])  # prompt 0 has 4 pairs, prompt 1 has 1
SRC = np.array(["big", "big", "big", "big", "small"], dtype=object)


def test_prompt_weighting_schemes():
    ones = np.ones(5)
    assert pair_weights(P, SRC, ones, "pairs", {}) == pytest.approx(ones)
    # each prompt counts the same: 4 x 1/4 and 1 x 1, scaled to mean 1
    assert pair_weights(P, SRC, ones, "prompts", {}) == pytest.approx(np.array([.25, .25, .25, .25, 1]) / 0.4)
    assert pair_weights(P, SRC, ones, "sqrt", {}) == pytest.approx(np.array([.5, .5, .5, .5, 1]) / 0.6)


def test_source_weights_multiply():
    w = pair_weights(P, SRC, np.ones(5), "pairs", {"small": 4.0})
    assert w == pytest.approx(np.array([1, 1, 1, 1, 4]) / 1.6)
    with pytest.raises(ValueError, match="allowed"):
        pair_weights(P, SRC, np.ones(5), "rows", {})


def test_ties_become_two_half_wins():
    table = pa.table({"prompt": ["p", "p", "q"], "model_a": ["x", "x", "y"], "model_b": ["y", "z", "z"],
                      "label": pa.array([1, 0, -1], pa.int8()), "source": ["s", "s", "s"]})
    arrays = PairArrays(table, {"p": 0, "q": 1}, {"x": 0, "y": 1, "z": 2})
    assert len(arrays.decisive()) == 2
    half = arrays.ties_as_half_wins()
    assert half.label.tolist() == [1, -1, 1, -1]
    assert half.weight.tolist() == [1.0, 1.0, 0.5, 0.5]
    assert (half.a.tolist(), half.b.tolist()) == ([0, 1, 0, 0], [1, 2, 2, 2])
