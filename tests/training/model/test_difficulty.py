"""training.model.difficulty: the ridge difficulty prior, its targets, and the IRT head reading it."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests import tiny_models
from training.data import load_pairs
from training.model.difficulty import DifficultyPrior, fit_ridge, prompt_targets
from training.model.heads import IRTHead
from training.router import TransformerEmbeddingModel
from training.specs import RouterConfig, ValidationSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _scores(rows: list[tuple[str, str, float]]) -> pa.Table:
    return load_pairs(pa.table({"prompt_id": [p for p, _, _ in rows], "prompt": [p for p, _, _ in rows],
                                "model": [m for _, m, _ in rows], "score": [s for _, _, s in rows],
                                "benchmark": ["b"] * len(rows)}))


def test_targets_are_each_prompts_mean_over_its_scored_llms():
    table = _scores([("p", "x", 1.0), ("p", "y", 0.0), ("p", "z", 1.0), ("q", "x", 1.0), ("q", "y", 1.0)])
    t = prompt_targets(table)
    got = dict(zip(t.prompts, zip(t.mean.tolist(), t.count.tolist(), strict=True), strict=True))
    assert got == {"p": (pytest.approx(2 / 3), 3.0), "q": (1.0, 2.0)}
    # centred: x's mean is 1, y's 0.5, z's 1, overall 0.8; p: (1-1+.8 + 0-.5+.8 + 1-1+.8) / 3
    c = prompt_targets(table, centre=True)
    centred = dict(zip(c.prompts, c.mean.tolist(), strict=True))
    assert centred["p"] == pytest.approx((0.8 + 0.3 + 0.8) / 3) and centred["q"] == pytest.approx(1.0)


def test_pairwise_rows_give_no_targets():
    judge = load_pairs(pa.table({"prompt": ["p"], "model_a": ["x"], "model_b": ["y"], "winner": ["model_a"]}))
    assert prompt_targets(judge).prompts == []


def test_ridge_recovers_a_line_and_shrinks_with_alpha():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = 0.5 + 0.1 * x[:, 0] - 0.05 * x[:, 2]
    coef, intercept = fit_ridge(x, y, alpha=1e-9)
    np.testing.assert_allclose(coef, [0.1, 0.0, -0.05], atol=1e-6)
    assert intercept == pytest.approx(0.5, abs=1e-6)
    strong, _ = fit_ridge(x, y, alpha=100.0)
    # about 1 / (1 + alpha) on unit-variance columns
    assert np.linalg.norm(strong) < np.linalg.norm(coef) / 50


def test_prior_is_minus_the_logit_of_the_predicted_mean():
    prior = DifficultyPrior(2).set(np.array([0.5, 0.0]), 0.5)
    d = prior(torch.tensor([[0.0, 3.0], [0.6, 0.0], [5.0, 0.0]]))
    # means 0.5, 0.8 and 3.0 (clipped to 0.98)
    want = [0.0, -math.log(0.8 / 0.2), -math.log(0.98 / 0.02)]
    assert torch.allclose(d.squeeze(1), torch.tensor(want), atol=1e-5)
    with pytest.raises(ValueError, match="got 3 coefficients for prompt vectors of 2"):
        prior.set(np.zeros(3), 0.0)


def test_irt_head_adds_the_prior_to_the_scaled_learned_difficulty():
    head = IRTHead(2, 2, [4], dropout=0.0, difficulty_prior=True, learned_difficulty=0.5)
    out = head.trunk[-1]
    torch.nn.init.zeros_(out.weight)
    out.bias.data = torch.tensor([2.0, 0.0])  # learned difficulty 2 on every prompt, loading 0
    head.prior.set(np.array([0.0, 0.0]), 0.8)  # the prior: mean correctness 0.8 everywhere
    raw = head.raw(torch.randn(3, 2), torch.tensor([[1.0, 0.0]]))
    # 1 - (0.5 x 2 + -logit(0.8))
    assert torch.allclose(raw, torch.full((3, 1), 1.0 - 1.0 + math.log(4.0)), atol=1e-5)
    assert {"prior.coef", "prior.intercept"} <= set(head.state_dict())


def test_learned_skills_scales_the_prompts_skill_term():
    head = IRTHead(2, 2, [4], dropout=0.0, learned_skills=0.25)
    out = head.trunk[-1]
    torch.nn.init.zeros_(out.weight)
    out.bias.data = torch.tensor([0.0, 2.0])  # difficulty 0, loading 2
    raw = head.raw(torch.randn(3, 2), torch.tensor([[1.0, 3.0]]))
    assert torch.allclose(raw, torch.full((3, 1), 1.0 + 0.25 * 2.0 * 3.0))


def test_a_router_fits_its_prior_before_training(tiny_encoders):
    fields = {"head": {"kind": "irt", "skills": 2, "hidden_dims": [16], "difficulty_prior": 1.0,
                       "learned_difficulty": 0.0},
              "embedding_spec": {"kind": "learned", "dim": 3},
              "loss": {"kind": "bradley_terry", "pointwise_weight": 1.0},
              "finetuning": {"kind": "frozen", "lr": 1e-2}, "epochs": 1, "batch_size": 32, "progress": False}
    table = tiny_models.synthetic_scores(40)
    # 'weak' also gets the code prompts right: those are easier (mean 2/3 against 1/3)
    weak_right = [m == "weak" and s == 0.0 and c for m, s, c in zip(
        table["model"].to_pylist(), table["score"].to_pylist(), _is_code(table), strict=True)]
    table = table.set_column(3, "score", pa.array([1.0 if w else s for w, s in
                                                   zip(weak_right, table["score"].to_pylist(), strict=True)]))
    model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), **fields)
    model.train(table, ValidationSplit(0.25, 0))
    prior = model.net.head.prior
    assert float(prior.coef.abs().sum()) > 0  # fitted, not the zero it was built with
    prompts = sorted(set(table["prompt"].to_pylist()))
    code = [p for p in prompts if "python" in p.lower() or "select" in p.lower()]
    other = [p for p in prompts if p not in code]
    d_code, d_other = (prior(torch.as_tensor(model.prompt_vectors(x))).mean() for x in (code, other))
    assert d_code < d_other  # the easier prompts read as less difficult
    vectors = torch.as_tensor(model.prompt_vectors(prompts))
    mean = (vectors @ prior.coef + prior.intercept).clamp(0.02, 0.98)
    assert torch.allclose(prior(vectors).squeeze(1), torch.log((1 - mean) / mean), atol=1e-5)


def _is_code(table: pa.Table) -> list[bool]:
    return ["python" in p.lower() or "select" in p.lower() for p in table["prompt"].to_pylist()]


def test_difficulty_fields_are_for_the_irt_head_only():
    with pytest.raises(ValueError, match=r"mlp\.difficulty_prior\n  Extra inputs are not permitted"):
        RouterConfig(head={"kind": "mlp", "difficulty_prior": 1.0})
