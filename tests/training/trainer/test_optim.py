"""Optimisers, schedules, learning rates and gradient clipping (training/trainer/optim.py,
training/trainer/loop.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests import tiny_models
from training import specs
from training.model.heads import MLPHead
from training.specs import ValidationSplit
from training.trainer import optim

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _linear_stack() -> tuple[nn.Module, nn.Module, nn.Parameter]:
    """A stand-in encoder (embedding table, linear, norm), a head and an LLM table."""
    encoder = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 8), nn.LayerNorm(8))
    head = MLPHead(8, 4, [6], dropout=0.0)
    table = nn.Parameter(torch.randn(3, 4))
    return encoder, head, table


def _owner(optimizers: optim.Optimizers, param: torch.Tensor) -> tuple[str, float]:
    for o in optimizers.optimizers:
        for g in o.param_groups:
            if any(p is param for p in g["params"]):
                return type(o).__name__, g["lr"]
    raise AssertionError("parameter not in any optimiser")


def test_muon_takes_linear_matrices_and_adamw_the_rest():
    encoder, head, table = _linear_stack()
    built = optim.build_optimizers(specs.Muon(), encoder, [*head.parameters(), table], 1e-3, 1e-2,
                                   head_modules=[head])
    assert [type(o).__name__ for o in built.optimizers] == ["Muon", "AdamW"]
    assert _owner(built, encoder[1].weight) == ("Muon", 1e-3)  # a projection matrix
    assert _owner(built, encoder[0].weight) == ("AdamW", 1e-3)  # token embedding table
    assert _owner(built, encoder[1].bias)[0] == "AdamW"
    assert _owner(built, encoder[2].weight)[0] == "AdamW"  # norm
    assert _owner(built, head.prompt_in.weight) == ("Muon", 1e-2)  # head hidden layer, head rate
    assert _owner(built, head.model_in.weight) == ("Muon", 1e-2)
    assert _owner(built, head.mlp[-1].weight) == ("AdamW", 1e-2)  # [1, n] output layer
    assert _owner(built, table) == ("AdamW", 1e-2)  # LLM embedding vectors: a table, not a map


def test_muon_step_updates_every_parameter():
    encoder, head, table = _linear_stack()
    params = [*encoder.parameters(), *head.parameters(), table]
    before = [p.detach().clone() for p in params]
    built = optim.build_optimizers(specs.Muon(), encoder, [*head.parameters(), table], 1e-2, 1e-2,
                                   head_modules=[head])
    ids = torch.randint(0, 50, (4, 5))
    prompt = encoder(ids).mean(1)
    loss = head(prompt, table).pow(2).sum()
    built.zero_grad()
    loss.backward()
    built.step()
    changed = [not torch.equal(a, p) for a, p in zip(before, params, strict=True)]
    grads = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]
    assert changed == grads and all(grads[1:4])


def test_muon_without_head_modules_falls_back_to_shape():
    encoder, head, table = _linear_stack()
    built = optim.build_optimizers(specs.Muon(), encoder, [*head.parameters(), table], 1e-3, 1e-2)
    assert _owner(built, table)[0] == "Muon"  # 2-D and unknown: the shape rule
    assert _owner(built, encoder[0].weight)[0] == "AdamW"  # the encoder is scanned by layer type


@pytest.mark.parametrize("kind, cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_adam_family_one_optimiser_two_rates(kind, cls):
    encoder, head, table = _linear_stack()
    spec = specs.AdamW() if kind == "adamw" else specs.Adam()
    built = optim.build_optimizers(spec, encoder, [*head.parameters(), table], 1e-4, 1e-3,
                                   head_modules=[head])
    (o,) = built.optimizers
    assert type(o) is cls
    assert [g["lr"] for g in o.param_groups] == [1e-4, 1e-3]
    if kind == "adamw":
        assert o.param_groups[0]["weight_decay"] == 0.01


def test_frozen_parameters_are_left_out():
    encoder, head, table = _linear_stack()
    encoder.requires_grad_(False)
    built = optim.build_optimizers(specs.AdamW(), encoder, [*head.parameters(), table], 1e-4, 1e-3)
    (o,) = built.optimizers
    assert [g["lr"] for g in o.param_groups] == [1e-3]  # the encoder group is dropped


@pytest.mark.parametrize("kind, expected", [
    ("constant", [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]),
    ("cosine", [0.25, 0.5, 0.75, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]),
])
def test_schedule_warmup_then_decay(kind, expected):
    # warm-up 4 of 10 steps: the rate climbs to the peak over 4 steps, then decays over the other 6
    factor = optim.schedule_factor(kind, 4, 10)
    got = [factor(s) for s in range(10)]
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert got == pytest.approx(expected)


def test_schedule_is_applied_step_by_step_to_every_optimiser():
    encoder, head, table = _linear_stack()
    built = optim.build_optimizers(specs.Muon(), encoder, [*head.parameters(), table], 1.0, 10.0,
                                   head_modules=[head])
    built.set_schedule(optim.schedule_factor("linear", 2, 6))
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for o in built.optimizers for g in o.param_groups])
        built.step()  # no gradients: the step only advances the schedules
    # groups per row: Muon [encoder, head], AdamW [encoder, head]; one factor scales them all
    expected = [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert seen == [pytest.approx([f, 10 * f, f, 10 * f]) for f in expected]


def test_schedule_without_warmup_starts_at_peak():
    assert optim.schedule_factor("cosine", 0, 5)(0) == 1.0


def test_registry_matches_spec_union():
    from typing import get_args

    union = get_args(get_args(specs.Optimizer)[0])
    assert {m.model_fields["kind"].default for m in union} == set(optim.OPTIMIZERS)


# --- learning rates and clipping in the training loop --------------------------------------------


def test_default_learning_rate_per_method():
    rates = {kind: cls().lr for kind, cls in [("lora", specs.LoRA), ("qlora", specs.QLoRA),
                                                ("last_layers", specs.LastLayers), ("bitfit", specs.BitFit),
                                                ("full", specs.Full), ("frozen", specs.Frozen)]}
    assert rates == {"lora": 2e-4, "qlora": 2e-4, "last_layers": 5e-5, "bitfit": 1e-3, "full": 2e-5,
                     "frozen": 1e-3}
    assert specs.MLPHeadSpec().lr_multiplier == specs.IRTHeadSpec().lr_multiplier == 10.0


def _train_capturing(tiny_encoders, monkeypatch, **fields) -> tuple[list, list]:
    """Train a tiny BERT router a few steps; return the optimisers built and the clipping calls."""
    import training.trainer.loop as loop
    from training.router import TransformerEmbeddingModel

    built, clips = [], []
    real_build, real_clip = loop.build_optimizers, torch.nn.utils.clip_grad_norm_

    def build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def clip(params, max_norm, *args, **kwargs):
        params = list(params)
        clips.append((len(params), max_norm))
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(loop, "build_optimizers", build)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    fields = {"head": {"hidden_dims": [8]}, **fields}
    model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), epochs=1, batch_size=48,
                                      progress=False, schedule={"kind": "constant", "warmup_ratio": 0.0},
                                      **fields)
    model.train(tiny_models.synthetic_scores(16), validation_split=ValidationSplit(0.25, 0))
    return built, clips


def test_head_rate_is_method_rate_times_multiplier(tiny_encoders, monkeypatch):
    built, clips = _train_capturing(tiny_encoders, monkeypatch, finetuning={"kind": "bitfit", "lr": 3e-3},
                                    head={"hidden_dims": [8], "lr_multiplier": 4.0})
    (o,) = built[0].optimizers
    assert [g["lr"] for g in o.param_groups] == pytest.approx([3e-3, 1.2e-2])


def test_frozen_encoder_head_uses_the_method_rate(tiny_encoders, monkeypatch):
    built, _ = _train_capturing(tiny_encoders, monkeypatch, finetuning={"kind": "frozen", "lr": 5e-3})
    (o,) = built[0].optimizers
    assert [g["lr"] for g in o.param_groups] == [5e-3]


def test_gradients_are_clipped_over_every_trained_parameter(tiny_encoders, monkeypatch):
    built, clips = _train_capturing(tiny_encoders, monkeypatch, finetuning={"kind": "bitfit"}, grad_clip=0.5)
    n_params = sum(len(g["params"]) for o in built[0].optimizers for g in o.param_groups)
    assert clips and all(c == (n_params, 0.5) for c in clips)


def test_no_clipping_when_grad_clip_is_none(tiny_encoders, monkeypatch):
    _, clips = _train_capturing(tiny_encoders, monkeypatch, finetuning={"kind": "bitfit"}, grad_clip=None)
    assert clips == []
