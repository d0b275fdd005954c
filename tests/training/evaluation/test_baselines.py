from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.baselines import (
    BASELINES,
    BradleyTerry,
    KNNWinRate,
    MatrixFactorization,
    PromptLength,
    RandomBaseline,
)
from training.evaluation.metrics import pair_diff, pairwise_accuracy

MODELS = ["llm_a", "llm_b", "llm_c"]


def _simulate_bt(strengths: np.ndarray, n: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, strengths.size, n)
    b = (a + rng.integers(1, strengths.size, n)) % strengths.size  # b != a
    p_a = 1 / (1 + np.exp(strengths[b] - strengths[a]))
    label = np.where(rng.random(n) < p_a, 1, -1)
    names = np.array(MODELS)
    return names[a], names[b], label


def _clustered(n_prompts: int, seed: int, pairs_per_prompt: int = 6, dim: int = 16):
    """Prompts in 3 clusters; in cluster c, MODELS[c] beats the others with probability 0.9."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 3, n_prompts)
    emb = np.eye(dim)[cluster] + 0.15 * rng.normal(size=(n_prompts, dim))
    prompt = np.repeat(np.arange(n_prompts), pairs_per_prompt)
    a = rng.integers(0, 3, prompt.size)
    b = (a + rng.integers(1, 3, prompt.size)) % 3
    best = cluster[prompt]
    p_a = np.where(a == best, 0.9, np.where(b == best, 0.1, 0.5))
    label = np.where(rng.random(prompt.size) < p_a, 1, -1)
    names = np.array(MODELS)
    return emb, prompt, names[a], names[b], label


def _accuracy(model, data) -> float:
    emb, prompt, a, b, label = data
    scores = model.score(emb, None, MODELS)
    return pairwise_accuracy(pair_diff(scores, MODELS, prompt, a, b), label)


# --- Bradley-Terry --------------------------------------------------------------------------


def test_bradley_terry_recovers_known_strengths():
    truth = np.array([0.0, 1.5, -1.0])  # llm_b > llm_a > llm_c
    a, b, label = _simulate_bt(truth, 6000, seed=0)
    bt = BradleyTerry().fit(None, None, a, b, label)
    theta = np.array([bt.strengths[m] for m in MODELS])
    assert np.argsort(theta).tolist() == [2, 0, 1]
    assert theta == pytest.approx(truth - truth.mean(), abs=0.15)
    assert theta.sum() == pytest.approx(0.0, abs=1e-9)  # the penalty centres the strengths


def test_bradley_terry_hand_mle_and_half_ties():
    a, b = ["x"] * 6, ["y"] * 6
    label = [1, 1, 1, -1, 0, 0]
    ignore = BradleyTerry(l2=1e-9).fit(None, None, a, b, label)
    assert ignore.strengths["x"] - ignore.strengths["y"] == pytest.approx(math.log(3), abs=1e-6)
    half = BradleyTerry(l2=1e-9, ties="half").fit(None, None, a, b, label)
    # 3 + 1 wins against 1 + 1: odds 2
    assert half.strengths["x"] - half.strengths["y"] == pytest.approx(math.log(2), abs=1e-6)


def test_bradley_terry_scores_every_prompt_alike():
    bt = BradleyTerry().fit(None, None, ["x", "y"], ["y", "x"], [1, 1])
    scores = bt.score(None, np.array([5, 10, 20]), ["y", "x"])
    assert scores.shape == (3, 2)
    assert np.all(scores == scores[0])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="ties='maybe'"):
        BradleyTerry(ties="maybe")
    with pytest.raises(ValueError, match="all 2 are ties"):
        BradleyTerry().fit(None, None, ["x", "y"], ["y", "x"], [0, 0])
    bt = BradleyTerry().fit(None, None, ["x"], ["y"], [1])
    with pytest.raises(KeyError, match=r"never saw models \['z'\].*\['x', 'y'\]"):
        bt.score(None, [3], ["x", "z"])
    with pytest.raises(ValueError, match="pass prompt_emb or prompt_lengths"):
        bt.score(None, None, ["x"])
    with pytest.raises(RuntimeError, match="not fitted"):
        BradleyTerry().score(None, [3], ["x"])


# --- the other baselines --------------------------------------------------------------------


def test_random_baseline_is_seeded():
    a, b, label = _simulate_bt(np.zeros(3), 30, seed=1)
    one = RandomBaseline(seed=4).fit(None, None, a, b, label).score(None, [1] * 5, MODELS)
    two = RandomBaseline(seed=4).fit(None, None, a, b, label).score(None, [1] * 5, MODELS)
    assert one.shape == (5, 3)
    assert np.array_equal(one, two)


def test_prompt_length_sends_long_prompts_to_the_stronger_llm():
    a, b, label = ["strong"] * 10, ["weak"] * 10, [1] * 8 + [-1] * 2
    model = PromptLength().fit(None, None, a, b, label)
    scores = model.score(None, np.array([10, 100, 1000]), ["strong", "weak"])
    diff = scores[:, 0] - scores[:, 1]
    assert np.all(diff > 0) and np.all(np.diff(diff) > 0)
    with pytest.raises(ValueError, match="prompt_lengths; got None"):
        model.score(np.zeros((3, 2)), None, ["strong"])


def test_knn_win_rate_hand_smoothing():
    emb = np.array([[1.0, 0.0], [0.0, 1.0]])
    model = KNNWinRate(k=1, prior=2.0).fit(
        emb, np.array([0, 0, 1]), ["x", "y", "x"], ["y", "x", "y"], [1, -1, -1]
    )
    # global rates: x 2 of 3 -> 3/5, y 1 of 3 -> 2/5. Neighbour prompt 0: x 2/2, y 0/2.
    # x: (2 + 2 * .6) / 4 = .8, y: (0 + 2 * .4) / 4 = .2
    scores = model.score(np.array([[2.0, 0.1]]), None, ["x", "y"])
    assert scores[0].tolist() == pytest.approx([math.log(4), -math.log(4)])


def test_knn_and_mf_beat_bradley_terry_when_the_best_llm_depends_on_the_prompt():
    train, test = _clustered(300, seed=0), _clustered(150, seed=1)
    emb, prompt, a, b, label = train
    bt = _accuracy(BradleyTerry().fit(emb, prompt, a, b, label), test)
    knn = _accuracy(KNNWinRate(k=20).fit(emb, prompt, a, b, label), test)
    mf = _accuracy(MatrixFactorization(dim=8, seed=0).fit(emb, prompt, a, b, label), test)
    # the best achievable is about 2/3 * 0.9 + 1/3 * 0.5 = 0.77; BT is about 0.5
    assert bt < 0.6
    assert knn > bt + 0.15
    assert mf > bt + 0.15


def test_matrix_factorization_is_seeded_and_checks_dim():
    emb, prompt, a, b, label = _clustered(60, seed=2)
    one = MatrixFactorization(dim=4, epochs=2, seed=3).fit(emb, prompt, a, b, label)
    two = MatrixFactorization(dim=4, epochs=2, seed=3).fit(emb, prompt, a, b, label)
    assert np.array_equal(one.score(emb, None, MODELS), two.score(emb, None, MODELS))
    with pytest.raises(ValueError, match="prompt_emb has dim 3; the model was fitted on dim 16"):
        one.score(np.ones((2, 3)), None, MODELS)
    with pytest.raises(ValueError, match=r"prompt_idx spans \[0, 59\] but prompt_emb has 10 rows"):
        MatrixFactorization().fit(emb[:10], prompt, a, b, label)
    with pytest.raises(ValueError, match="KNNWinRate needs prompt_emb and prompt_idx"):
        KNNWinRate().fit(None, prompt, a, b, label)


@pytest.mark.parametrize("kind", sorted(BASELINES))
def test_every_registered_baseline_fits_and_scores(kind):
    emb, prompt, a, b, label = _clustered(40, seed=5)
    model = BASELINES[kind]().fit(emb, prompt, a, b, label)
    lengths = np.arange(40) + 1
    scores = model.score(emb, lengths, MODELS[::-1])
    assert scores.shape == (40, 3)
    assert np.all(np.isfinite(scores))
