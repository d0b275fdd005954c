"""The new LLM's row fit (training/llm_embeddings/row_fit.py) on a head whose likelihood is known:
raw(p, e) = u_p . e, P(a beats b) = sigmoid(raw_a - raw_b)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.llm_embeddings import row_fit
from training.llm_embeddings.records import Records


class BilinearHead(nn.Module):
    def raw(self, prompt: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        return prompt @ llms.T

    def pair_logit(self, raw_a: torch.Tensor, raw_b: torch.Tensor) -> torch.Tensor:
        return raw_a - raw_b

    def probability(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)

    def measured_part(self, prompts: torch.Tensor) -> None:
        return None  # every coordinate of its rows is fitted (training.model.heads.Head)


def _problem(truth: np.ndarray, n_prompts: int, seed: int = 0):
    """Known LLMs packed near the origin (spread 0.1), prompts u ~ N(0, 1) in 2-D plus a constant 1,
    and one record per prompt of the new LLM (row `truth`) against a random known LLM."""
    rng = np.random.default_rng(seed)
    known_rows = rng.normal(0.0, 0.1, (6, 3)).astype(np.float32)
    u = np.hstack([rng.normal(size=(n_prompts, 2)), np.ones((n_prompts, 1))]).astype(np.float32)
    opponent = rng.integers(0, 6, n_prompts)
    logit = (u * truth).sum(1) - (u * known_rows[opponent]).sum(1)
    outcome = np.where(rng.random(n_prompts) < 1 / (1 + np.exp(-logit)), 1, -1).astype(np.int8)
    llms = tuple(f"k{j}" for j in range(6)) + ("new",)
    records = Records(tuple(map(str, range(n_prompts))), tuple(map(str, range(n_prompts))), llms,
                      np.full(n_prompts, 6), np.arange(n_prompts), np.arange(n_prompts), opponent, outcome)
    return u, records, list(llms[:6]), known_rows


def test_a_new_llm_far_from_the_known_ones_gets_a_weak_prior_by_cross_validation():
    truth = np.array([2.0, -1.5, 1.0], dtype=np.float32)  # 10-20 prior standard deviations out
    u, records, known, rows = _problem(truth, 400)
    chosen = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows)[0]
    known_spread = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, prior_scales=(1.0,))[0]
    weakest = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows,
                                  prior_scales=(row_fit.PRIOR_SCALES[-1],))[0]
    np.testing.assert_allclose(chosen, weakest, atol=1e-5)  # cross-validation picked the weakest prior
    assert np.linalg.norm(chosen - truth) < 0.5 * np.linalg.norm(known_spread - truth)


def test_too_few_prompts_to_cross_validate_keep_the_first_prior():
    u, records, known, rows = _problem(np.array([1.0, 0.0, 0.5], dtype=np.float32), 2 * row_fit.FOLDS - 1)
    got = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, prior_scales=(1.0, 0.05))
    want = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, prior_scales=(1.0,))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, row_fit.fit_llm_row(BilinearHead(), u, records, known, rows,
                                                    prior_scales=(0.05,)), atol=1e-3)


def test_a_refit_with_few_records_stays_near_the_row_its_prior_is_centred_on():
    """`prior_mean` (a known LLM's own row, `training.add_model --refit`): with a handful of records
    and a strong prior the fit stays by that row, not by the average known LLM."""
    truth = np.array([1.0, -0.5, 0.5], dtype=np.float32)
    u, records, known, rows = _problem(truth, 4)
    own = np.array([0.8, -0.4, 0.6], dtype=np.float32)
    around_own = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, prior_scales=(50.0,),
                                     prior_mean=own)[0]
    around_mean = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, prior_scales=(50.0,))[0]
    assert np.linalg.norm(around_own - own) < 0.1
    assert np.linalg.norm(around_mean - rows.mean(0)) < 0.1 < np.linalg.norm(around_mean - own)


def test_the_prior_can_weigh_each_coordinate_on_its_own():
    """A prior weight per coordinate (experiments/row_fit_study.py's "level free"): a coordinate
    weighted heavily stays at the prior's centre while a free one follows the records."""
    truth = np.array([2.0, -1.5, 1.0], dtype=np.float32)
    u, records, known, rows = _problem(truth, 400)
    pinned = torch.tensor([1e4, 0.0, 0.0])  # the first coordinate held, the others free
    got = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, prior_scales=(pinned,))[0]
    assert abs(got[0] - rows.mean(0)[0]) < 0.05
    moved, wanted = (got - rows.mean(0))[1:], (truth - rows.mean(0))[1:]
    assert np.linalg.norm(moved) > 0.3 * np.linalg.norm(wanted) and moved @ wanted > 0  # towards the data
    # between two per-coordinate weightings, cross-validation picks the one the records support
    chosen = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows,
                                 prior_scales=(pinned, torch.full((3,), 0.05)))[0]
    assert np.linalg.norm(chosen - truth) < np.linalg.norm(got - truth)


def _scored_problem(truth: np.ndarray, offset: float, n_prompts: int = 300, seed: int = 1):
    """As `_problem`, with own per-model scores: every LLM's 0/1 score on every prompt drawn from
    sigmoid(u . row + offset), a source `offset` easier than the head's raw values say."""
    u, records, known, rows = _problem(truth, n_prompts, seed)
    rng = np.random.default_rng(seed + 100)
    everyone = np.vstack([rows, truth])
    p = 1 / (1 + np.exp(-(u @ everyone.T + offset)))  # [P, 7]
    scores = (rng.random(p.shape) < p).astype(np.float32)
    prompts = np.arange(n_prompts)
    own = (prompts, scores[:, 6])
    known_scores = (np.repeat(prompts, 6), np.tile(np.arange(6), n_prompts), scores[:, :6].reshape(-1))
    return u, records, known, rows, own, known_scores


def test_own_scores_from_an_unseen_source_are_read_against_the_known_llms_scores_there():
    """A source easier throughout than the head thinks (offset 1.5): fitted pointwise as they are, the
    new LLM's own scores lift its level (the constant coordinate) towards the offset; calibrated on
    the known LLMs' scores on the same prompts, its level stays near the truth."""
    truth = np.array([1.0, -0.5, 0.3], dtype=np.float32)
    u, records, known, rows, own, ks = _scored_problem(truth, offset=1.5)
    fit = dict(own_scores=own, pointwise_weight=1.0, prior_scales=(0.05,))
    raw = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, **fit)[0]
    calibrated = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, known_scores=ks, **fit)[0]
    assert raw[2] - truth[2] > 0.3  # the offset leaked into the level
    assert abs(calibrated[2] - truth[2]) < 0.2
    assert np.linalg.norm(calibrated - truth) < 0.6 * np.linalg.norm(raw - truth)
    # and the calibrated own scores still say more than the comparisons alone
    pairs_only = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, prior_scales=(0.05,))[0]
    assert np.linalg.norm(calibrated - truth) < np.linalg.norm(pairs_only - truth)


def test_calibration_changes_nothing_where_the_head_is_calibrated_or_no_known_score_is_given():
    truth = np.array([1.0, -0.5, 0.3], dtype=np.float32)
    u, records, known, rows, own, ks = _scored_problem(truth, offset=0.0)
    fit = dict(own_scores=own, pointwise_weight=1.0, prior_scales=(0.05,))
    raw = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, **fit)[0]
    calibrated = row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, known_scores=ks, **fit)[0]
    assert np.linalg.norm(calibrated - raw) < 0.05
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    np.testing.assert_allclose(row_fit.fit_llm_row(BilinearHead(), u, records, known, rows, known_scores=none,
                                                   **fit)[0], raw, atol=1e-6)


def test_known_scores_reads_each_known_llms_score_once_per_prompt():
    import pyarrow as pa
    pairs = pa.table({"prompt": ["p", "p", "q", "r"], "model_a": ["new", "k0", "k1", "x"],
                      "model_b": ["k0", "k1", "new", "k0"], "score_a": [1.0, 0.0, 0.5, 1.0],
                      "score_b": [0.0, 0.25, None, 1.0]})
    rows, cols, values = row_fit.known_scores(pairs, ["k0", "k1"], ("p", "q"))
    got = sorted(zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True))
    assert got == [(0, 0, 0.0), (0, 1, 0.25), (1, 1, 0.5)]  # x and prompt r are not asked for
