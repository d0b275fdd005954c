"""training.model.difficulty: the ridge difficulty prior, its targets, and the IRT head reading it."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests import tiny_models
from training.data import load_pairs
from training.model.difficulty import (
    DifficultyPrior,
    ScoredPromptGate,
    fit_gate_mlp,
    fit_logistic,
    fit_ridge,
    prompt_targets,
)
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


def test_served_difficulty_is_the_prior_on_the_trained_scale_and_keeps_every_ranking():
    torch.manual_seed(0)
    head = IRTHead(3, 3, [8], dropout=0.0, served_difficulty=True).requires_grad_(False)
    prompts, llms = torch.randn(50, 3), torch.randn(4, 3)
    before = head.raw(prompts, llms)
    assert not bool(head.served_on)  # the trained difficulty is served until serve_difficulty
    coef, intercept = np.array([0.05, -0.03, 0.02]), 0.5
    d0 = head.served.set(coef, intercept)(prompts)
    np.testing.assert_allclose(head.raw(prompts, llms), before)  # set alone serves nothing yet
    # the trained difficulty reads as exactly 2 x the prior's - 1 here: the map must recover that
    fitted = _serve_against(head, prompts, 2.0 * d0 - 1.0, coef, intercept)
    assert abs(fitted["scale"] - 2.0) < 1e-4 and abs(fitted["shift"] + 1.0) < 1e-4 and bool(head.served_on)
    after = head.raw(prompts, llms)
    trained = head.trained_difficulty(prompts, head.loadings(prompts))
    np.testing.assert_allclose(after, before + trained - (2.0 * d0 - 1.0), atol=1e-5)
    # a pair's logit does not read the difficulty: every ranking of the LLMs on a prompt is kept
    np.testing.assert_allclose(head.pair_logit(after[:, :1], after[:, 1:]),
                               head.pair_logit(before[:, :1], before[:, 1:]), atol=1e-5)
    assert {"served.coef", "served.intercept", "served_map", "served_on"} <= set(head.state_dict())


def _serve_against(head: IRTHead, prompts: torch.Tensor, target: torch.Tensor, coef, intercept) -> dict:
    """serve_difficulty with the trained difficulty read as `target` [P, 1] (what the trunk would give)."""
    head.trained_difficulty = lambda prompt, h: target  # the instance's, not the class's
    try:
        return head.serve_difficulty(prompts, coef, intercept)
    finally:
        del head.trained_difficulty


def test_a_router_serves_its_ridge_difficulty_after_training_and_exports_it(tiny_encoders, tmp_path):
    import pyarrow.parquet as pq

    from routerdb import Router
    from training.add_model import add_model
    from training.export import export_bundle

    fields = {"head": {"kind": "irt", "skills": 2, "hidden_dims": [16], "served_difficulty": 1.0},
              "embedding_spec": {"kind": "learned", "dim": 3},
              "loss": {"kind": "bradley_terry", "pointwise_weight": 1.0},
              "finetuning": {"kind": "frozen", "lr": 1e-2}, "epochs": 2, "batch_size": 32, "progress": False}
    table = tiny_models.synthetic_scores(40)
    model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), **fields)
    model.train(table, ValidationSplit(0.25, 0))
    head = model.net.head
    assert bool(head.served_on) and float(head.served.coef.abs().sum()) > 0
    prompts = sorted(set(table["prompt"].to_pylist()))
    u = torch.as_tensor(model.prompt_vectors(prompts))
    with torch.no_grad():
        served = head.difficulty(u, head.loadings(u))
        expected = head.served(u) * head.served_map[0] + head.served_map[1]
        trained = head.trained_difficulty(u, head.loadings(u))
    assert torch.allclose(served, expected) and not torch.allclose(served, trained)
    bundle = export_bundle(model, tmp_path / "bundle", prompts[:8])
    np.testing.assert_allclose(Router(bundle).score(prompts[:8]), model.score_matrix(prompts[:8]), atol=1e-4)
    # a new LLM's row is fitted against the head as served (add_model rebuilds it, buffers included)
    oracle = pa.table({"prompt_id": table["prompt_id"].unique(), "prompt": table["prompt"].unique(),
                       "model": ["oracle"] * 40, "score": [1.0] * 40, "benchmark": ["synthetic"] * 40})
    pq.write_table(pa.concat_tables([table, oracle]), tmp_path / "records.parquet")
    added = Router(add_model(bundle, tmp_path / "records.parquet", "oracle", tmp_path / "added"))
    assert added.models[-1] == "oracle" and added.best(prompts).count("oracle") >= 30


def test_served_difficulty_needs_per_model_scores(tiny_encoders):
    fields = {"head": {"kind": "irt", "skills": 2, "hidden_dims": [16], "served_difficulty": 1.0},
              "embedding_spec": {"kind": "learned", "dim": 3}, "loss": {"kind": "bradley_terry"},
              "finetuning": {"kind": "frozen", "lr": 1e-2}, "epochs": 1, "batch_size": 32, "progress": False}
    model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), **fields)
    with pytest.raises(ValueError, match="head.served_difficulty fits a prompt's mean correctness"):
        model.train(_judged_pairs(), ValidationSplit(0.25, 0))


def _judged_pairs() -> pa.Table:
    """Pairwise rows only (no per-model score): 'chat' beats 'weak' on every synthetic prompt."""
    prompts = sorted(set(tiny_models.synthetic_scores(40)["prompt"].to_pylist()))
    return pa.Table.from_pylist([{"prompt": p, "model_a": "chat", "model_b": "weak", "winner": "model_a"}
                                 for p in prompts])


def test_fit_logistic_separates_two_kinds_of_prompt_and_weights_the_classes():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(1.0, 1.0, (300, 4)), rng.normal(-1.0, 1.0, (60, 4))])
    y = np.r_[np.ones(300), np.zeros(60)]
    balanced = np.where(y == 1, 0.5 / 300, 0.5 / 60)
    coef, intercept = fit_logistic(x, y, 0.01, balanced)
    p = 1.0 / (1.0 + np.exp(-(x @ coef + intercept)))
    assert (p[:300] > 0.5).mean() > 0.9 and (p[300:] < 0.5).mean() > 0.9
    # unweighted, the larger class pulls the boundary its way: more of the small class read as large
    c2, i2 = fit_logistic(x, y, 0.01)
    assert (1.0 / (1.0 + np.exp(-(x[300:] @ c2 + i2)))).mean() > p[300:].mean()
    # a strong penalty leaves the slope near zero: the gate sits at the (weighted) base rate
    c3, i3 = fit_logistic(x, y, 1e4, balanced)
    assert np.abs(c3).max() < 1e-3 and abs(i3) < 0.05


def test_the_gate_serves_the_learned_difficulty_where_open_and_the_prior_where_shut():
    head = IRTHead(2, 2, [4], dropout=0.0, served_difficulty=True,
                   served_difficulty_gate=True).requires_grad_(False)
    out = head.trunk[-1]
    out.weight.zero_()
    out.bias.copy_(torch.tensor([2.0, 0.0]))  # learned difficulty 2 on every prompt, loading 0
    prompts = torch.tensor([[10.0, 0.0], [-10.0, 0.0]])  # the gate open on the first, shut on the second
    prior = (np.zeros(2), 0.8)  # mean correctness 0.8 everywhere: difficulty -log 4
    head.serve_difficulty(prompts, *prior, gate=(np.array([1.0, 0.0]), 0.0))
    d = head.difficulty(prompts, head.loadings(prompts))[:, 0]
    # the map fits learned 2 against a constant prior: scale 0 (least squares' minimum norm), shift 2
    assert torch.allclose(d, torch.tensor([2.0, 2.0]), atol=1e-3)
    head.served_map.copy_(torch.tensor([1.0, 0.0]))  # the prior as it is
    d = head.difficulty(prompts, head.loadings(prompts))[:, 0]
    assert torch.allclose(d, torch.tensor([2.0, -math.log(4.0)]), atol=1e-3)
    with pytest.raises(ValueError, match="pass the fitted gate"):
        head.serve_difficulty(prompts, *prior)


def test_the_gate_needs_a_served_difficulty():
    with pytest.raises(ValueError, match=r"set served_difficulty \(its ridge strength"):
        RouterConfig(head={"kind": "irt", "served_difficulty_gate": True})


@pytest.mark.parametrize("hidden", [0, 16])  # the logistic gate, and one hidden layer
def test_a_router_fits_its_scored_prompt_gate_on_mixed_data_and_exports_it(tiny_encoders, tmp_path, hidden):
    from routerdb import Router
    from training.export import export_bundle

    fields = {"head": {"kind": "irt", "skills": 2, "hidden_dims": [16], "served_difficulty": 1.0,
                       "served_difficulty_gate": True, "served_skills_gate": True,
                       "served_gate_hidden": hidden},
              "embedding_spec": {"kind": "learned", "dim": 3},
              "loss": {"kind": "bradley_terry", "pointwise_weight": 1.0},
              "finetuning": {"kind": "frozen", "lr": 1e-2}, "epochs": 1, "batch_size": 32, "progress": False}
    scores = tiny_models.synthetic_scores(40)
    chat = [f"tell me a story about the {w} and the moon, please" for w in
            ("cat", "dog", "sea", "king", "tree", "wind", "ship", "bird", "road", "star", "rain", "lamp")]
    judged = pa.Table.from_pylist([{"prompt": p, "model_a": "chat", "model_b": "weak", "winner": "model_a"}
                                   for p in chat])
    model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), **fields)
    model.train([scores, judged], ValidationSplit(0.25, 0))
    head = model.net.head
    scored = sorted(set(scores["prompt"].to_pylist()))
    g_scored, g_chat = (head.served_gate(torch.as_tensor(model.prompt_vectors(x))).mean()
                        for x in (scored, chat))
    assert g_scored > 0.5 > g_chat  # the learned difficulty where it was taught, the prior on chat
    trained_chat = [p for p in chat if p not in set(model.validation_prompts)]
    with torch.no_grad():  # the skills are held at their mean over the pairwise-only training prompts
        held = head.loadings(torch.as_tensor(model.prompt_vectors(trained_chat)))[:, 1:].mean(0)
    assert torch.allclose(head.served_loading_mean, held, atol=1e-5) and bool(held.abs().sum() > 0)
    bundle = export_bundle(model, tmp_path / "bundle", scored[:4] + chat[:4])
    np.testing.assert_allclose(Router(bundle).score(scored[:4] + chat[:4]),
                               model.score_matrix(scored[:4] + chat[:4]), atol=1e-4)


def test_the_skills_gate_holds_an_llms_skill_term_at_its_mean_where_the_gate_is_shut():
    head = IRTHead(2, 3, [4], dropout=0.0, served_difficulty=True,
                   served_skills_gate=True).requires_grad_(False)
    head.trunk = torch.nn.Linear(2, 3).requires_grad_(False)  # a trunk whose loadings are known:
    head.trunk.weight.zero_()
    head.trunk.bias.zero_()
    head.trunk.weight[1, 1] = 1.0  # difficulty 0, the first loading the prompt's second coordinate
    llms = torch.tensor([[0.5, 2.0, 0.0], [0.0, -1.0, 0.0]])
    prompts = torch.tensor([[30.0, 3.0], [-30.0, 3.0]])  # the gate open on the first, shut on the second
    pairwise = torch.tensor([[0.0, 1.0], [0.0, -3.0]])  # loadings 1 and -3: their mean is -1
    before = head.raw(prompts, llms)
    head.serve_difficulty(prompts, np.zeros(2), 0.5, gate=(np.array([1.0, 0.0]), 0.0),
                          pairwise_prompts=pairwise)
    assert torch.allclose(head.served_loading_mean, torch.tensor([-1.0, 0.0]))
    after = head.raw(prompts, llms)
    # open: the prompt's own loading 3 (ability + 3 b); shut: the mean -1 (ability - b)
    assert torch.allclose(after[0] - after[0].mean(), before[0] - before[0].mean(), atol=1e-4)
    assert torch.allclose(after[1, 0] - after[1, 1], torch.tensor(0.5 - 2.0 - (0.0 + 1.0)), atol=1e-4)



def test_with_every_prompt_scored_the_gates_stay_open_and_nothing_served_changes(tiny_encoders):
    """Per-model scores only (as the shipped sample): no prompt is pairwise-only, so both gates are
    open everywhere and the router scores exactly as without the served options."""
    head = {"kind": "irt", "skills": 2, "hidden_dims": [16]}
    fields = {"embedding_spec": {"kind": "learned", "dim": 3},
              "loss": {"kind": "bradley_terry", "pointwise_weight": 1.0},
              "finetuning": {"kind": "frozen", "lr": 1e-2}, "epochs": 1, "batch_size": 32, "progress": False}
    table = tiny_models.synthetic_scores(40)
    prompts = sorted(set(table["prompt"].to_pylist()))
    matrices = []
    for extra in ({}, {"served_difficulty": 1.0, "served_difficulty_gate": True, "served_skills_gate": True}):
        model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), head={**head, **extra},
                                          **fields)
        model.train(table, ValidationSplit(0.25, 0))
        matrices.append(model.score_matrix(prompts))
    assert bool(model.net.head.served_on)
    np.testing.assert_allclose(matrices[1], matrices[0], atol=1e-6)


def test_the_mlp_gate_separates_what_no_line_can_and_is_seeded():
    """Scored prompts on a ring, pairwise-only ones inside it: a logistic gate cannot tell them
    apart, the one-hidden-layer gate does; the same seed fits the same gate."""
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, 400)
    ring = np.c_[np.cos(angle), np.sin(angle)] * 2.0 + rng.normal(0, 0.1, (400, 2))
    inner = rng.normal(0, 0.4, (400, 2))
    x, y = np.vstack([ring, inner]), np.r_[np.ones(400), np.zeros(400)]
    coef, intercept = fit_logistic(x, y, 0.01)
    linear = 1.0 / (1.0 + np.exp(-(x @ coef + intercept)))
    assert ((linear > 0.5) == y).mean() < 0.7
    params = fit_gate_mlp(x, y, hidden=16, steps=400, dropout=0.0)
    gate = ScoredPromptGate(2, hidden=16).set(**params)
    g = gate(torch.as_tensor(x, dtype=torch.float32))[:, 0].numpy()
    assert ((g > 0.5) == y).mean() > 0.9
    again = fit_gate_mlp(x, y, hidden=16, steps=400, dropout=0.0)
    np.testing.assert_array_equal(params["w1"], again["w1"])
    with pytest.raises(ValueError, match="16 hidden units"):
        gate.set(coef, intercept)


def test_a_gate_width_without_a_gate_is_refused():
    with pytest.raises(ValueError, match="served_gate_hidden is 64.*neither is set"):
        RouterConfig(head={"kind": "irt", "served_difficulty": 0.1, "served_gate_hidden": 64})


def test_the_skills_gate_offset_holds_the_skills_only_where_the_gate_is_sure():
    """A prompt the gate leans to chat on (logit -1) is held without the offset and keeps its
    skill term with offset 3; a prompt it is sure of (logit -10) is held either way."""
    def served(offset: float) -> torch.Tensor:
        head = IRTHead(2, 2, [4], dropout=0.0, served_difficulty=True, served_skills_gate=True,
                       served_skills_gate_offset=offset).requires_grad_(False)
        head.trunk = torch.nn.Linear(2, 2).requires_grad_(False)
        head.trunk.weight.zero_()
        head.trunk.bias.zero_()
        head.trunk.weight[1, 1] = 1.0  # the loading is the prompt's second coordinate
        pairwise = torch.tensor([[0.0, 0.0]])  # held loading: 0
        head.serve_difficulty(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), np.zeros(2), 0.5,
                              gate=(np.array([1.0, 0.0]), 0.0), pairwise_prompts=pairwise)
        return head.served_loadings(torch.tensor([[-1.0, 2.0], [-10.0, 2.0]]), torch.tensor([[2.0], [2.0]]))

    plain, offset = served(0.0)[:, 0], served(3.0)[:, 0]
    assert plain[0] < 0.2 and offset[0] > 1.99  # leaning to chat: held without, kept with the offset
    assert plain[1] < 1e-6 and offset[1] < 0.01  # sure of chat: held either way


def test_a_skills_gate_offset_without_the_skills_gate_is_refused():
    with pytest.raises(ValueError, match="served_skills_gate_offset is 3, but served_skills_gate is not set"):
        RouterConfig(head={"kind": "irt", "served_difficulty": 0.1, "served_difficulty_gate": True,
                           "served_skills_gate_offset": 3.0})
