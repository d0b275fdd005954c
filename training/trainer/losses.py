"""The losses: a ranking loss over pairs, and a pointwise loss over per-model scores.

Both read the head's unbounded `raw` values and ask the head what they mean
(`training.model.head`): `pair_logit` for Bradley-Terry, `squash` for the margin ranking loss
(on scores in [-1, 1]), `probability` for the pointwise loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

EPS = 1e-6  # keeps the pointwise log-likelihood finite at probability 0 or 1


def pair_loss(head: nn.Module, raw_a: torch.Tensor, raw_b: torch.Tensor, label: torch.Tensor, *, kind: str,
              margin: float, weight: torch.Tensor | None = None,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over decisive pairs; label +1 (a better) or -1 (b better).

    margin_ranking: max(0, -label * (s_a - s_b) + margin) on the squashed scores
    bradley_terry:  -log sigmoid(label * logit), logit = head.pair_logit(raw_a, raw_b) (x `scale`,
                    a per-pair factor such as a source's decisiveness, where given)
    """
    y = label.to(raw_a.dtype)
    if kind == "margin_ranking":
        per_pair = F.margin_ranking_loss(head.squash(raw_a), head.squash(raw_b), y, margin=margin,
                                         reduction="none")
    elif kind == "bradley_terry":
        logit = head.pair_logit(raw_a, raw_b)
        per_pair = F.softplus(-y * (logit if scale is None else logit * scale))
    else:
        raise ValueError(f"loss must be 'margin_ranking' or 'bradley_terry', got {kind!r}")
    return _mean(per_pair, weight)


def point_loss(head: nn.Module, raw: torch.Tensor, target: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of the head's P(correct) against per-model scores in [0, 1]."""
    p = head.probability(raw).clamp(EPS, 1.0 - EPS)
    y = target.to(p.dtype)
    return _mean(-(y * p.log() + (1.0 - y) * (1.0 - p).log()), weight)


def _mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp(min=1e-12)


class PairScale(nn.Module):
    """A learned Bradley-Terry scale per source (`source_scale`): judges and benchmarks differ in
    how decisive a label is, so one source's labels need not stretch another's score gaps."""

    def __init__(self, sources: list[str]):
        super().__init__()
        self.sources = list(sources)
        self.log_scale = nn.Parameter(torch.zeros(len(sources)))

    def forward(self, source_index: torch.Tensor) -> torch.Tensor:
        return self.log_scale[source_index].exp()
