"""The router as one torch module: encoder -> pooling -> [prompt, features] -> head vs LLMs.

`RouterNet.forward(input_ids, attention_mask, features, llm_embeddings) -> scores [P, M]` is
exactly the graph exported to ONNX after adapters are merged (its fourth input is named
`model_embeddings` there), so training, `.predict` and the bundle compute the same function.
"""

from __future__ import annotations

import torch
from torch import nn

from training.encoder.pooling import Pooling
from training.model.heads import Head


class FeatureNorm(nn.Module):
    """z-score with the training set's statistics, clipped to [-5, 5] (as routerdb.features)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.std).clamp(-5.0, 5.0)


class RouterNet(nn.Module):
    def __init__(self, encoder: nn.Module, pooling: Pooling, feature_norm: FeatureNorm | None,
                 head: Head):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.feature_norm = feature_norm
        self.head = head

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pooling(hidden, attention_mask)  # [P, H]

    def prompt_vector(self, pooled: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if self.feature_norm is None:
            return pooled
        return torch.cat([pooled, self.feature_norm(features).to(pooled.dtype)], dim=-1)  # [P, H+F]

    def score(self, pooled: torch.Tensor, features: torch.Tensor,
              llm_embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(self.prompt_vector(pooled.float(), features), llm_embeddings)  # [P, M]

    def raw(self, pooled: torch.Tensor, features: torch.Tensor, llm_embeddings: torch.Tensor) -> torch.Tensor:
        """The head's unbounded values [P, M] before its squash (what the losses read)."""
        return self.head.raw(self.prompt_vector(pooled.float(), features), llm_embeddings)

    def forward(self, input_ids, attention_mask, features, llm_embeddings) -> torch.Tensor:
        return self.score(self.embed(input_ids, attention_mask), features, llm_embeddings)
