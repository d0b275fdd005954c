"""training.model.head: the scoring head's shape, range and its optional linear LLM strength."""

from __future__ import annotations

import torch

from training.model.head import ScoringHead


def test_scores_are_prompt_by_llm_in_range():
    torch.manual_seed(0)
    head = ScoringHead(6, 4, [8, 5], dropout=0.0)
    scores = head(torch.randn(3, 6) * 10, torch.randn(2, 4) * 10)
    assert scores.shape == (3, 2) and bool(torch.all(scores.abs() <= 1))


def test_llm_strength_is_a_prompt_agnostic_linear_term():
    torch.manual_seed(0)
    head = ScoringHead(6, 4, [8], dropout=0.0, llm_strength=True)
    last = head.mlp[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)  # the MLP says 0 for everything: only the strength is left
    models = torch.randn(3, 4)
    scores = head(torch.randn(5, 6), models)
    expected = torch.tanh(models @ head.strength.weight.squeeze(0))
    assert torch.allclose(scores, expected.expand(5, 3), atol=1e-6)
    plain = ScoringHead(6, 4, [8], dropout=0.0)
    torch.nn.init.zeros_(plain.mlp[-1].weight)
    torch.nn.init.zeros_(plain.mlp[-1].bias)
    assert torch.count_nonzero(plain(torch.randn(5, 6), models)) == 0 and plain.strength is None


def test_irt_head_is_ability_minus_difficulty_plus_skills():
    from training.model.head import IRTHead

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


def test_pair_and_point_losses_by_hand():
    import math

    from training.model.head import IRTHead
    from training.trainer.losses import PairScale, pair_loss, point_loss

    head = IRTHead(2, 1, [2], dropout=0.0)
    raw_a, raw_b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    label = torch.tensor([1, 1])
    # -log sigmoid(1) and -log sigmoid(-2)
    want = (math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2
    assert abs(float(pair_loss(head, raw_a, raw_b, label, kind="bradley_terry", margin=0.1)) - want) < 1e-6
    scale = PairScale(["judge", "bench"])
    scale.log_scale.data = torch.tensor([math.log(2.0), 0.0])
    scaled = pair_loss(head, raw_a, raw_b, label, kind="bradley_terry", margin=0.1,
                       scale=scale(torch.tensor([0, 0])))
    want2 = (math.log1p(math.exp(-2)) + math.log1p(math.exp(4))) / 2  # logits doubled
    assert abs(float(scaled) - want2) < 1e-6
    # BCE of sigmoid(0) = 0.5 against 1 and 0.25: -log .5 each time
    got = point_loss(head, torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.25]))
    assert abs(float(got) - math.log(2)) < 1e-6
