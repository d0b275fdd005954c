"""The ranking losses over pairs of scores: margin ranking or Bradley-Terry, optionally weighted."""

from __future__ import annotations

import torch
from torch.nn import functional as F


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
