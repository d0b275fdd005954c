"""The scoring head and the ranking losses.

score(prompt, LLM) = tanh(MLP([prompt_embedding, prompt_features, model_embedding])), in [-1, 1],
plus, with `llm_strength`, a linear term w . model_embedding inside the tanh: a prompt-agnostic
strength per LLM (Bradley-Terry's answer) that the MLP then corrects per prompt.
The first layer is written as two linear maps, one over the prompt part and one over the LLM
part, summed: exactly an MLP over the concatenation, but it scores P prompts against M LLMs as
[P, 1, h] + [1, M, h] without building the [P, M, H + F + D] concatenation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ScoringHead(nn.Module):
    def __init__(self, prompt_dim: int, model_dim: int, hidden_dims: list[int], dropout: float,
                 negative_slope: float = 0.01, llm_strength: bool = False):
        super().__init__()
        self.strength = nn.Linear(model_dim, 1, bias=False) if llm_strength else None
        first, *rest = hidden_dims
        self.prompt_in = nn.Linear(prompt_dim, first)
        self.model_in = nn.Linear(model_dim, first, bias=False)
        layers: list[nn.Module] = [nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
        width = first
        for h in rest:
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, prompt: torch.Tensor, models: torch.Tensor) -> torch.Tensor:
        # prompt [P, H + F], models [M, D] -> scores [P, M]
        z = self.prompt_in(prompt).unsqueeze(1) + self.model_in(models).unsqueeze(0)
        out = self.mlp(z).squeeze(-1)
        if self.strength is not None:
            out = out + self.strength(models).squeeze(-1).unsqueeze(0)
        return torch.tanh(out)


def ranking_loss(s_a: torch.Tensor, s_b: torch.Tensor, label: torch.Tensor, *, kind: str,
                 margin: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over decisive pairs; label +1 (a better) or -1 (b better).

    margin_ranking: max(0, -label * (s_a - s_b) + margin)
    bradley_terry:  -log sigmoid(label * (s_a - s_b) * 5)   (scores live in [-1, 1]; x5 widens
                    the reachable win-probability range to about 0.00005 .. 0.99995)
    """
    y = label.to(s_a.dtype)
    if kind == "margin_ranking":
        per_pair = F.margin_ranking_loss(s_a, s_b, y, margin=margin, reduction="none")
    elif kind == "bradley_terry":
        per_pair = F.softplus(-y * (s_a - s_b) * 5.0)
    else:
        raise ValueError(f"loss must be 'margin_ranking' or 'bradley_terry', got {kind!r}")
    if weight is None:
        return per_pair.mean()
    return (per_pair * weight).sum() / weight.sum().clamp(min=1e-12)
