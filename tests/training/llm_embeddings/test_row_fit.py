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
