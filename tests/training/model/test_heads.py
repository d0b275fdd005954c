"""training.model.heads: each head's shape, range and maths, the registry against its spec union."""

from __future__ import annotations

import torch

from training.model.heads import MLPHead


def test_scores_are_prompt_by_llm_in_range():
    torch.manual_seed(0)
    head = MLPHead(6, 4, [8, 5], dropout=0.0)
    scores = head(torch.randn(3, 6) * 10, torch.randn(2, 4) * 10)
    assert scores.shape == (3, 2) and bool(torch.all(scores.abs() <= 1))


def test_llm_strength_is_a_prompt_agnostic_linear_term():
    torch.manual_seed(0)
    head = MLPHead(6, 4, [8], dropout=0.0, llm_strength=True)
    last = head.mlp[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)  # the MLP says 0 for everything: only the strength is left
    models = torch.randn(3, 4)
    scores = head(torch.randn(5, 6), models)
    expected = torch.tanh(models @ head.strength.weight.squeeze(0))
    assert torch.allclose(scores, expected.expand(5, 3), atol=1e-6)
    plain = MLPHead(6, 4, [8], dropout=0.0)
    torch.nn.init.zeros_(plain.mlp[-1].weight)
    torch.nn.init.zeros_(plain.mlp[-1].bias)
    assert torch.count_nonzero(plain(torch.randn(5, 6), models)) == 0 and plain.strength is None


def test_irt_head_is_ability_minus_difficulty_plus_skills():
    from training.model.heads import IRTHead

    head = IRTHead(3, 3, [4], dropout=0.0)  # rows [ability, b1, b2]
    out = head.trunk[-1]
    torch.nn.init.zeros_(out.weight)
    out.bias.data = torch.tensor([0.5, 1.0, -2.0])  # every prompt: difficulty 0.5, loadings (1, -2)
    rows = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    raw = head.raw(torch.randn(4, 3), rows)
    # by hand: 2 - 0.5 + 0 = 1.5; 0 - 0.5 + (1 * 1 + 1 * -2) = -1.5
    assert torch.allclose(raw, torch.tensor([1.5, -1.5]).expand(4, 2))
    scores = head(torch.randn(4, 3), rows)
    assert torch.allclose(scores, 2 * torch.sigmoid(raw) - 1)
    assert torch.allclose(head.probability(raw), torch.sigmoid(raw))
    assert torch.allclose(head.pair_logit(raw[:, 0], raw[:, 1]), torch.full((4,), 3.0))


def test_registry_builds_each_kind_from_its_spec():
    from training import specs
    from training.model.heads import HEADS, IRTHead, build_head

    mlp = build_head(specs.MLPHeadSpec(hidden_dims=[8], llm_strength=True), 6, 4)
    irt_spec = specs.IRTHeadSpec(skills=2, hidden_dims=[8], coverage=True, bradley_terry_level=True)
    irt = build_head(irt_spec, 6, 6)
    assert type(mlp) is HEADS["mlp"] is MLPHead and mlp.strength is not None
    assert type(irt) is HEADS["irt"] is IRTHead and irt.skills == 2 and irt.needs_strengths


def test_only_the_irt_head_with_coverage_measures_part_of_a_row():
    from training.model.heads import IRTHead

    prompts, rows = torch.randn(5, 6), torch.zeros(3, 4)
    mlp = MLPHead(6, 4, [8], dropout=0.0)
    mlp.finish_rows(rows, [prompts] * 3, None)
    assert mlp.measured_part(prompts) is None and not mlp.needs_measured_prompts and not rows.any()
    assert IRTHead(6, 3, [8], dropout=0.0).measured_part(prompts) is None
    head = IRTHead(6, 6, [8], dropout=0.0, coverage=True)  # rows [theta, b1, b2, mu1, mu2, rho]
    start, values = head.measured_part(prompts)
    assert start == 3 and torch.equal(values, head.coverage_of(prompts))
    rows = torch.zeros(2, 6)
    head.finish_rows(rows, [prompts, None], None)
    assert torch.equal(rows[0, 3:], values) and not rows[1].any() and bool(head.gate_on)
