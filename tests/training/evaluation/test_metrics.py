from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.metrics import (
    apgr,
    bootstrap_ci,
    calibration,
    cost_quality_curve,
    cpt,
    expected_calibration_error,
    log_loss,
    pair_diff,
    paired_bootstrap_diff,
    pairwise_accuracy,
    per_pair_table,
    routing_curve,
)

LN3 = math.log(3.0)


# --- pairwise metrics -----------------------------------------------------------------------


def test_accuracy_excludes_ties_and_counts_zero_diff_half():
    diff = [2.0, -1.0, 0.0, 3.0, 0.5, -2.0]
    label = [1, 1, 1, 0, -1, 0]
    # decisive: right, wrong, half, wrong -> 1.5 / 4
    assert pairwise_accuracy(diff, label) == 0.375


def test_accuracy_without_decisive_pairs_is_nan():
    assert math.isnan(pairwise_accuracy([1.0, -1.0], [0, 0]))
    assert math.isnan(log_loss([1.0], [0]))


def test_bad_labels_and_lengths_are_errors():
    with pytest.raises(ValueError, match=r"label has values \[2\]"):
        pairwise_accuracy([1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match="diff has 2 values but label has 1"):
        pairwise_accuracy([1.0, 2.0], [1])


def test_log_loss_hand_value_and_stability():
    diff = [0.0, LN3, LN3, 5.0]
    label = [1, 1, -1, 0]  # the tie is excluded
    # -log(1/2), -log(3/4), -log(1/4)
    expected = (math.log(2) + math.log(4 / 3) + math.log(4)) / 3
    assert log_loss(diff, label) == pytest.approx(expected, rel=1e-12)
    assert log_loss([LN3 / 2], [1], scale=2.0) == pytest.approx(math.log(4 / 3), rel=1e-12)
    assert log_loss([1000.0], [-1]) == pytest.approx(1000.0)
    assert log_loss([1000.0], [1]) == 0.0


def test_calibration_hand_bins_and_ece():
    diff = [0.0, 0.0, LN3, LN3, -LN3, 9.0]
    label = [1, -1, 1, 1, -1, 0]
    table = calibration(diff, label, bins=4)  # p = .5, .5, .75, .75, .25
    assert [count for _, _, count in table] == [1, 2, 2]
    assert [win for _, win, _ in table] == [0.0, 0.5, 1.0]
    assert [p for p, _, _ in table] == pytest.approx([0.25, 0.5, 0.75])
    # (1 * 0.25 + 2 * 0 + 2 * 0.25) / 5
    assert expected_calibration_error(diff, label, bins=4) == pytest.approx(0.15)


def test_calibration_counts_sum_to_decisive_pairs():
    rng = np.random.default_rng(0)
    diff = rng.normal(0, 3, 500)
    label = rng.choice([-1, 0, 1], 500)
    table = calibration(diff, label, bins=10)
    assert sum(count for _, _, count in table) == int(np.sum(label != 0))
    assert len(table) <= 10


def test_pair_diff_and_unknown_model():
    scores = np.array([[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]])
    models = ["x", "y", "z"]
    got = pair_diff(scores, models, [0, 1, 1], ["x", "z", "y"], ["z", "x", "x"])
    assert got.tolist() == [-3.0, 3.0, -1.0]
    with pytest.raises(KeyError, match=r"\['w'\]"):
        pair_diff(scores, models, [0], ["w"], ["x"])


def test_per_pair_table_groups_unordered_pairs():
    rows = per_pair_table(
        model_a=["y", "x", "x", "z", "x"],
        model_b=["x", "y", "z", "x", "y"],
        diff=[1.0, -1.0, 2.0, 0.0, 5.0],
        label=[1, -1, 1, 1, 0],
    )
    assert rows == [
        {"model_a": "x", "model_b": "y", "n": 2, "ties": 1, "accuracy": 1.0},
        {"model_a": "x", "model_b": "z", "n": 2, "ties": 0, "accuracy": 0.75},
    ]


# --- routing curves -------------------------------------------------------------------------

# 10 prompts; gain = strong - weak: five +1, four 0, one -1
STRONG = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], dtype=float)
WEAK = np.array([1, 0, 0, 0, 1, 0, 0, 1, 0, 0], dtype=float)


def test_routing_curve_deciles_on_distinct_diffs():
    diff = np.arange(10.0)[::-1]  # prompt 0 is the first sent to strong
    pct, quality = routing_curve(STRONG, WEAK, diff)
    assert pct.tolist() == pytest.approx([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    # weak 0.3; adding prompts 0..9 in order adds their gains 0,1,1,1,0,1,0,-1,1,0 / 10
    expected = [0.3, 0.3, 0.4, 0.5, 0.6, 0.6, 0.7, 0.7, 0.6, 0.7, 0.7]
    assert quality.tolist() == pytest.approx(expected)


def test_perfect_router_apgr_is_the_oracle_area():
    oracle = STRONG - WEAK
    # oracle curve: (0, .3) -> (.5, .8) up; flat to (.9, .8); down to (1, .7)
    area = 0.5 * (0.3 + 0.8) / 2 + 0.4 * 0.8 + 0.1 * (0.8 + 0.7) / 2
    assert area == pytest.approx(0.67)
    expected = (area - 0.3) / (0.7 - 0.3)
    assert apgr(STRONG, WEAK, oracle) == pytest.approx(expected)  # 0.925
    assert apgr(STRONG, WEAK, oracle, n_points=11) == pytest.approx(expected)


def test_constant_router_apgr_is_exactly_one_half():
    pct, quality = routing_curve(STRONG, WEAK, np.full(10, 0.7))
    assert pct[0] == 0.0 and pct[-1] == 100.0
    assert set(pct.tolist()) == {0.0, 100.0}  # all tied prompts move together
    assert apgr(STRONG, WEAK, np.full(10, 0.7)) == pytest.approx(0.5, abs=1e-12)
    assert apgr(STRONG, WEAK, np.zeros(10), n_points=11) == pytest.approx(0.5, abs=1e-12)


def test_random_router_apgr_near_one_half():
    rng = np.random.default_rng(1)
    strong, weak = rng.random(20000), rng.random(20000) * 0.6
    assert apgr(strong, weak, rng.normal(size=20000)) == pytest.approx(0.5, abs=0.02)


def test_apgr_nan_when_strong_and_weak_are_equal():
    assert math.isnan(apgr(WEAK, WEAK, np.arange(10.0)))


def test_cpt_interpolates_on_a_hand_made_curve():
    # diff ranks prompts 0,1,2,3; gains in that order 0,1,1,0 (weak all 0, strong mean .5)
    strong, weak, diff = [0.0, 1.0, 1.0, 0.0], [0.0] * 4, [4.0, 3.0, 2.0, 1.0]
    pct, quality = routing_curve(strong, weak, diff, n_points=None)
    assert pct.tolist() == [0, 25, 50, 75, 100]
    assert quality.tolist() == [0, 0, 0.25, 0.5, 0.5]
    assert cpt(strong, weak, diff, recovered=0.5) == pytest.approx(50.0)  # target .25
    assert cpt(strong, weak, diff, recovered=0.75) == pytest.approx(62.5)  # .375 between 50, 75
    assert cpt(strong, weak, diff, recovered=0.0) == 0.0
    assert math.isnan(cpt(strong, weak, diff, recovered=1.5))


def test_routing_inputs_are_checked():
    with pytest.raises(ValueError, match=r"sizes \[2, 2, 3\]"):
        routing_curve([1, 0], [0, 0], [1, 2, 3])
    with pytest.raises(ValueError, match="n_points=1"):
        routing_curve([1, 0], [0, 0], [1, 2], n_points=1)


def test_cost_quality_curve_hand_case():
    quality = np.array([[1.0, 0.0], [1.0, 1.0]])
    cost = np.array([[1.0, 0.1], [1.0, 0.1]])
    scores = np.array([[2.0, 0.0], [0.5, 0.0]])
    curve = cost_quality_curve(quality, cost, scores, lambdas=[0.0, 1.0, 10.0])
    assert curve.cost.tolist() == pytest.approx([1.0, 0.55, 0.1])
    assert curve.quality.tolist() == pytest.approx([1.0, 1.0, 0.5])
    assert (curve.oracle_cost, curve.oracle_quality) == pytest.approx((0.55, 1.0))
    assert curve.model_cost.tolist() == pytest.approx([1.0, 0.1])
    assert curve.model_quality.tolist() == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="cost has missing"):
        cost_quality_curve(quality, np.full((2, 2), np.nan), scores, [0.0])


# --- bootstrap ------------------------------------------------------------------------------


def _clustered_rows():
    """10 prompts x 50 rows; a prompt's rows are all right (first 5) or all wrong."""
    groups = np.repeat(np.arange(10), 50)
    correct = (groups < 5).astype(float)
    return groups, correct


def test_bootstrap_ci_contains_estimate_and_is_wide_for_clustered_rows():
    groups, correct = _clustered_rows()
    low, high = bootstrap_ci(np.mean, groups, correct, n_boot=2000)
    assert low <= correct.mean() <= high
    # prompts are the unit: ~ binomial(10, .5) / 10, width ~ 0.6. Resampling the 500 rows
    # would give a width near 0.09.
    assert high - low >= 0.4


def test_bootstrap_resamples_whole_groups():
    groups = np.repeat(["p1", "p2", "p3", "p4"], 3)

    def whole_groups(g):
        _, counts = np.unique(g, return_counts=True)
        return float(np.all(counts % 3 == 0))

    assert bootstrap_ci(whole_groups, groups, groups, n_boot=200) == (1.0, 1.0)


def test_bootstrap_ci_of_accuracy_contains_estimate():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 100, 1000)
    diff, label = rng.normal(size=1000), rng.choice([-1, 1], 1000)
    diff = diff + 0.5 * label
    low, high = bootstrap_ci(pairwise_accuracy, groups, diff, label, n_boot=300)
    assert low < pairwise_accuracy(diff, label) < high


def test_paired_bootstrap_cancels_shared_prompt_effects():
    groups, correct = _clustered_rows()
    better = correct + 0.1  # a beats b by exactly 0.1 on every prompt
    low, high = paired_bootstrap_diff(np.mean, groups, (better,), (correct,), n_boot=300)
    assert (low, high) == pytest.approx((0.1, 0.1))
    with pytest.raises(ValueError, match="groups has 500 rows but arrays have"):
        paired_bootstrap_diff(np.mean, groups, (better[:3],), (correct,))
