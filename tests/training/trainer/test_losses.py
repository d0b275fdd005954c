"""training.trainer.losses: each loss kind by hand, the registry against its spec union."""

from __future__ import annotations

import math

import torch
from pydantic import TypeAdapter

from training import specs
from training.model.heads import IRTHead
from training.trainer.losses import (
    LOSSES,
    BradleyTerryLoss,
    MarginRankingLoss,
    PairLoss,
    build_loss,
    point_loss,
)


def test_pair_and_point_losses_by_hand():
    head = IRTHead(2, 1, [2], dropout=0.0)
    raw_a, raw_b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    label = torch.tensor([1, 1])
    # -log sigmoid(1) and -log sigmoid(-2)
    want = (math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2
    plain = build_loss(specs.BradleyTerrySpec())
    assert abs(float(plain.pair(head, raw_a, raw_b, label)) - want) < 1e-6 and not list(plain.parameters())
    scaled = build_loss(specs.BradleyTerrySpec(source_scale=True), ["judge", "bench"])
    scaled.scale.log_scale.data = torch.tensor([math.log(2.0), 0.0])
    assert scaled.scale.sources == ["judge", "bench"]
    got = scaled.pair(head, raw_a, raw_b, label, source=torch.tensor([0, 0]))
    want2 = (math.log1p(math.exp(-2)) + math.log1p(math.exp(4))) / 2  # logits doubled
    assert abs(float(got) - want2) < 1e-6
    assert abs(float(scaled.pair(head, raw_a, raw_b, label)) - want) < 1e-6  # no source: scale 1
    # BCE of sigmoid(0) = 0.5 against 1 and 0.25: -log .5 each time
    got = point_loss(head, torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.25]))
    assert abs(float(got) - math.log(2)) < 1e-6


def test_margin_ranking_on_squashed_scores_by_hand():
    head = IRTHead(2, 1, [2], dropout=0.0)  # squash: 2 sigmoid(raw) - 1
    loss = build_loss(specs.MarginRankingSpec(margin=0.5))
    raw_a, raw_b = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 10.0])
    s_b = 2 * torch.sigmoid(torch.tensor(10.0)) - 1
    # equal scores: the margin; a far behind b: margin + s_b; the second pair weighs 3x
    got = loss.pair(head, raw_a, raw_b, torch.tensor([1, 1]), weight=torch.tensor([1.0, 3.0]))
    assert abs(float(got) - (0.5 + 3 * (0.5 + float(s_b))) / 4) < 1e-6


def test_registry_builds_each_kind_from_its_spec():
    for kind, cls in LOSSES.items():
        spec = TypeAdapter(specs.LossSpec).validate_python({"kind": kind})
        loss = build_loss(spec, ["a", "b"])
        assert type(loss) is cls and issubclass(cls, PairLoss)
        head = IRTHead(2, 1, [2], dropout=0.0)
        value = loss.pair(head, torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1]),
                          source=torch.tensor([0]))
        assert value.ndim == 0 and bool(torch.isfinite(value))
    assert LOSSES["margin_ranking"] is MarginRankingLoss and LOSSES["bradley_terry"] is BradleyTerryLoss
