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
