"""The losses: one class per `loss.kind` (`LOSSES`), each a ranking loss over pairs, plus the
pointwise loss over per-model scores that every kind adds with `loss.pointwise_weight`.

Every loss reads the head's unbounded `raw` values and asks the head what they mean
(`training.model.heads.Head`): `squash` for the margin ranking loss (on scores in [-1, 1]),
`pair_logit` for Bradley-Terry, `probability` for the pointwise loss. A loss is an `nn.Module`:
what it learns (Bradley-Terry's scale per source) trains beside the head, and checkpoints keep it
as training state (it is not exported). Adding a loss: a spec class in `training.specs` (a member
of `LossSpec`), a class here and a line in `LOSSES`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from training.model.heads import Head
from training.specs import BradleyTerrySpec, LossSpec, MarginRankingSpec

EPS = 1e-6  # keeps the pointwise log-likelihood finite at probability 0 or 1


class PairLoss(nn.Module):
    """A pairwise loss: built from its spec and the training pairs' sources, it scores a batch of
    decisive pairs by the head's raw values."""

    def __init__(self, spec: LossSpec, sources: Sequence[str] = ()):
        super().__init__()

    def pair(self, head: Head, raw_a: torch.Tensor, raw_b: torch.Tensor, label: torch.Tensor,
             weight: torch.Tensor | None = None, source: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over pairs (per-pair `weight`s where given); label +1 (a better) or -1 (b
        better); `source` [pairs] indexes the sources the loss was built with (None in validation)."""
        raise NotImplementedError


class MarginRankingLoss(PairLoss):
    """max(0, -label * (s_a - s_b) + margin) on the squashed scores."""

    def __init__(self, spec: MarginRankingSpec, sources: Sequence[str] = ()):
        super().__init__(spec, sources)
        self.margin = spec.margin

    def pair(self, head, raw_a, raw_b, label, weight=None, source=None) -> torch.Tensor:
        per_pair = F.margin_ranking_loss(head.squash(raw_a), head.squash(raw_b), label.to(raw_a.dtype),
                                         margin=self.margin, reduction="none")
        return weighted_mean(per_pair, weight)


class BradleyTerryLoss(PairLoss):
    """-log sigmoid(label * logit), logit = head.pair_logit(raw_a, raw_b), x a learned scale per
    source with `source_scale` (`PairScale`: judges and benchmarks differ in how decisive a label is)."""

    def __init__(self, spec: BradleyTerrySpec, sources: Sequence[str] = ()):
        super().__init__(spec, sources)
        self.scale = PairScale(list(sources)) if spec.source_scale else None

    def pair(self, head, raw_a, raw_b, label, weight=None, source=None) -> torch.Tensor:
        logit = head.pair_logit(raw_a, raw_b)
        if self.scale is not None and source is not None:
            logit = logit * self.scale(source)
        return weighted_mean(F.softplus(-label.to(raw_a.dtype) * logit), weight)


class PairScale(nn.Module):
    """A learned Bradley-Terry scale per source (`source_scale`): judges and benchmarks differ in
    how decisive a label is, so one source's labels need not stretch another's score gaps."""

    def __init__(self, sources: list[str]):
        super().__init__()
        self.sources = list(sources)
        self.log_scale = nn.Parameter(torch.zeros(len(sources)))

    def forward(self, source_index: torch.Tensor) -> torch.Tensor:
        return self.log_scale[source_index].exp()


LOSSES: dict[str, type[PairLoss]] = {
    "margin_ranking": MarginRankingLoss,
    "bradley_terry": BradleyTerryLoss,
}


def build_loss(spec: LossSpec, sources: Sequence[str] = ()) -> PairLoss:
    """The pairwise loss `spec` describes, for training pairs from these `source` values."""
    return LOSSES[spec.kind](spec, sources)


def point_loss(head: Head, raw: torch.Tensor, target: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of the head's P(correct) against per-model scores in [0, 1]."""
    p = head.probability(raw).clamp(EPS, 1.0 - EPS)
    y = target.to(p.dtype)
    return weighted_mean(-(y * p.log() + (1.0 - y) * (1.0 - p).log()), weight)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp(min=1e-12)
