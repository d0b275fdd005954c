"""The LLM tables the scoring head reads in phase 2: ``() -> LLM embeddings [M, D]``.

`LearnedTable` (kind ``learned``), `FixedTable` (phase-1 embeddings, fixed: the default) or
`ProfileTable` (``train_with_head``: the record network keeps training with the ranking loss,
recomputing every LLM's embedding from its profile records at each step, so a new LLM embedded
later lands in the same space as the trained ones). `phase1_table` picks between the last two.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from training.llm_embeddings import records as rec
from training.llm_embeddings.embedder import LLMEmbedder


class LearnedTable(nn.Module):
    """Kind 'learned': one trainable vector per LLM."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self) -> torch.Tensor:
        return self.weight  # [M, D]


class FixedTable(nn.Module):
    """Phase-1 embeddings, not trained further."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self) -> torch.Tensor:
        return self.weight  # [M, D]


class ProfileTable(nn.Module):
    """`train_with_head`: every LLM's embedding recomputed from its profile records at each call,
    by the phase-1 record network, which therefore trains with the head."""

    def __init__(self, model: LLMEmbedder, records: rec.Records, names: Sequence[str]):
        super().__init__()
        self.net = model.net
        self.register_buffer("center", model.center.clone(), persistent=False)
        self.register_buffer("scale", model.scale.clone(), persistent=False)
        strength = torch.from_numpy(model.strength_column(records, names))
        self.register_buffer("strength", strength.to(model.device), persistent=False)
        rows = model.profiles(records, names)
        text, opponent, outcome, mask = model.set_inputs(records, rows, model.vectors(records))
        for name, value in (("text", text), ("opponent", opponent), ("outcome", outcome), ("mask", mask)):
            self.register_buffer(name, value.detach(), persistent=False)

    def forward(self) -> torch.Tensor:
        has = self.mask.any(dim=1)  # an LLM without records stays 0: the average LLM
        raw = self.net(self.text[has], self.opponent[has], self.outcome[has], self.mask[has])
        out = torch.zeros(len(has), raw.shape[1], device=raw.device, dtype=raw.dtype)
        learned = out.index_put((has.nonzero().squeeze(1),), (raw - self.center) @ self.scale)
        return torch.cat([learned, self.strength], dim=1)  # [M, D]


def phase1_table(model: LLMEmbedder, records: rec.Records, names: Sequence[str]) -> nn.Module:
    """The head's LLM table from a phase-1 model (fixed, or trained with the head)."""
    if model.spec.train_with_head:
        return ProfileTable(model, records, names).to(model.device)
    return FixedTable(torch.from_numpy(model.embed_llms(records, names)).to(model.device))
