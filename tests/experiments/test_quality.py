"""experiments.quality: the recommended spec is the candidate the transfer study names, and the
previous spec it is compared with is the one examples/specs/router.json held before."""

from __future__ import annotations

from pathlib import Path

from experiments import quality
from experiments.study import recommended_overrides, router_config
from training.specs import DEFAULT_ENCODER

# examples/specs/router.json at the start of the transfer work (less data and output)
BEFORE_TRANSFER = {
    "encoder": {"name": DEFAULT_ENCODER, "max_length": 128, "truncation": "head_tail", "pooling": "auto"},
    "finetuning": {"kind": "frozen", "lr": 0.001}, "embedding_spec": {"kind": "learned", "dim": 32},
    "head": {"hidden_dims": [256, 64], "dropout": 0.1}, "use_prompt_features": True,
    "optimizer": {"kind": "adamw", "weight_decay": 0.01}, "schedule": {"kind": "cosine", "warmup_ratio": 0.1},
    "loss": "bradley_terry", "ties": "half", "prompt_weighting": "sqrt", "epochs": 3, "batch_size": 256,
    "seed": 42, "progress": False}


def test_the_shipped_router_spec_is_the_recommended_candidate():
    candidates = dict(quality.TRANSFER_CANDIDATES)
    shipped = router_config(recommended_overrides(), DEFAULT_ENCODER)
    assert shipped == router_config(candidates[quality.RECOMMENDED], DEFAULT_ENCODER)
    assert shipped != router_config(quality.PREVIOUS[1], DEFAULT_ENCODER)


def test_the_shipped_fast_spec_is_the_fast_candidate():
    candidates = dict(quality.TRANSFER_CANDIDATES)
    shipped = router_config(recommended_overrides(Path("examples/specs/router-fast.json")), DEFAULT_ENCODER)
    assert shipped == router_config(candidates[quality.FAST], DEFAULT_ENCODER)
    assert shipped.encoder.kind == "static"


def test_the_previous_spec_is_the_router_spec_before_the_transfer_work():
    previous = router_config(quality.PREVIOUS[1], DEFAULT_ENCODER)
    assert previous == router_config(BEFORE_TRANSFER, DEFAULT_ENCODER)
    assert previous.head.kind == "mlp" and previous.embedding_spec.dim == 32
