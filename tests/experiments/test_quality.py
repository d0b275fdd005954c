"""experiments.quality: the recommended spec is the candidate the transfer study names."""

from __future__ import annotations

from experiments import quality
from experiments.study import recommended_overrides, router_config
from training.specs import DEFAULT_ENCODER


def test_the_shipped_router_spec_is_the_recommended_candidate():
    candidates = dict(quality.TRANSFER_CANDIDATES)
    shipped = router_config(recommended_overrides(), DEFAULT_ENCODER)
    assert shipped == router_config(candidates[quality.RECOMMENDED], DEFAULT_ENCODER)
    assert shipped != router_config(quality.PREVIOUS[1], DEFAULT_ENCODER)
