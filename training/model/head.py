"""The scoring head (its losses: `training.trainer.losses`).

score(prompt, LLM) = tanh(MLP([prompt_embedding, prompt_features, llm_embedding])), in [-1, 1],
plus, with `llm_strength`, a linear term w . llm_embedding inside the tanh: a prompt-agnostic
strength per LLM (Bradley-Terry's answer) that the MLP then corrects per prompt.
The first layer is written as two linear maps, one over the prompt part and one over the LLM
part, summed: exactly an MLP over the concatenation, but it scores P prompts against M LLMs as
[P, 1, h] + [1, M, h] without building the [P, M, H + F + D] concatenation.
"""

from __future__ import annotations

import torch
from torch import nn


class ScoringHead(nn.Module):
    def __init__(self, prompt_dim: int, llm_dim: int, hidden_dims: list[int], dropout: float,
                 negative_slope: float = 0.01, llm_strength: bool = False):
        super().__init__()
        self.strength = nn.Linear(llm_dim, 1, bias=False) if llm_strength else None
        first, *rest = hidden_dims
        self.prompt_in = nn.Linear(prompt_dim, first)
        self.model_in = nn.Linear(llm_dim, first, bias=False)
        layers: list[nn.Module] = [nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
        width = first
        for h in rest:
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, prompt: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        # prompt [P, H + F], llms [M, D] -> scores [P, M]
        z = self.prompt_in(prompt).unsqueeze(1) + self.model_in(llms).unsqueeze(0)
        out = self.mlp(z).squeeze(-1)
        if self.strength is not None:
            out = out + self.strength(llms).squeeze(-1).unsqueeze(0)
        return torch.tanh(out)


def build_head(config, prompt_dim: int, llm_dim: int) -> ScoringHead:
    """The head a RouterConfig describes, for prompt vectors of `prompt_dim` (pooled encoder vector
    + features) and LLM rows of `llm_dim`: the router builds it, `training.add_model` rebuilds it
    from a bundle's manifest to fit a new LLM's row."""
    head = config.head
    return ScoringHead(prompt_dim, llm_dim, list(head.hidden_dims), head.dropout, head.negative_slope,
                       llm_strength=head.llm_strength)
