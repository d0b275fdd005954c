"""Optimisers and learning-rate schedules, one registry each keyed by the spec's `kind`
(`OPTIMIZERS`, `SCHEDULES`).

Parameter groups: the encoder's trainable parameters at the fine-tuning method's rate, the head
and the LLM embeddings at that rate x `head.lr_multiplier` (or the method's rate alone when the
encoder is frozen). Muon (torch.optim.Muon) orthogonalises updates of the linear layers' weight
matrices only (attention / MLP projections, LoRA's A and B, the head's hidden layers); every other
parameter (biases, norms, token / position embedding tables, the LLM embedding vectors, the head's
[1, n] output layer) goes to AdamW, as Muon's authors recommend.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from training.encoder.finetuning import LINEAR_LAYERS
from training.specs import Schedule

log = logging.getLogger(__name__)


class Optimizers:
    """One or more torch optimisers stepped together, with one schedule each."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []

    def set_schedule(self, factor: Callable[[int], float]) -> None:
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in self.optimizers]

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()
        for s in self.schedulers:
            s.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        for o, s in zip(self.schedulers, state["schedulers"], strict=True):
            o.load_state_dict(s)


def _groups(encoder_params, head_params, lr: float, head_lr: float) -> list[dict]:
    groups = [{"params": list(encoder_params), "lr": lr}, {"params": list(head_params), "lr": head_lr}]
    return [g for g in groups if g["params"]]


def _adamw(spec, groups, matrices: set[int]) -> Optimizers:
    return Optimizers([torch.optim.AdamW(groups, betas=spec.betas, weight_decay=spec.weight_decay)])


def _adam(spec, groups, matrices: set[int]) -> Optimizers:
    return Optimizers([torch.optim.Adam(groups, betas=spec.betas)])


def _muon(spec, groups, matrices: set[int]) -> Optimizers:
    muon_groups, adamw_groups = [], []
    for g in groups:
        two_d = [p for p in g["params"] if id(p) in matrices]
        rest = [p for p in g["params"] if id(p) not in matrices]
        if two_d:
            muon_groups.append({"params": two_d, "lr": g["lr"]})
        if rest:
            adamw_groups.append({"params": rest, "lr": g["lr"]})
    opts: list[torch.optim.Optimizer] = []
    if muon_groups:
        # match_rms_adamw scales Muon's update to AdamW's RMS, so the methods' AdamW rates apply.
        opts.append(torch.optim.Muon(muon_groups, momentum=spec.momentum, weight_decay=spec.weight_decay,
                                     adjust_lr_fn="match_rms_adamw"))
    if adamw_groups:
        opts.append(torch.optim.AdamW(adamw_groups, weight_decay=spec.weight_decay))
    log.info("muon: %d weight matrices on Muon, %d other tensors on AdamW",
             sum(len(g["params"]) for g in muon_groups), sum(len(g["params"]) for g in adamw_groups))
    return Optimizers(opts)


OPTIMIZERS: dict[str, Callable] = {"adamw": _adamw, "adam": _adam, "muon": _muon}


def matrix_parameters(*modules: nn.Module) -> set[int]:
    """ids of the weight matrices Muon may take: linear-layer weights (LoRA's A and B included)
    with both sides > 1. Embedding tables, norms, biases and a [1, n] output layer are excluded."""
    out = set()
    for module in modules:
        for layer in module.modules():
            w = getattr(layer, "weight", None)
            if isinstance(layer, LINEAR_LAYERS) and w is not None and w.ndim == 2 and min(w.shape) > 1:
                out.add(id(w))
    return out


def build_optimizers(spec, encoder: nn.Module, head_params, lr: float, head_lr: float, *,
                     head_modules: Sequence[nn.Module] | None = None) -> Optimizers:
    """Optimisers over the encoder's trainable parameters (rate `lr`) and `head_params` (`head_lr`).

    `head_modules` (the modules owning `head_params`) tell Muon which head parameters are
    linear-layer matrices; without them every 2-D head parameter with both sides > 1 counts.
    """
    head_params = list(head_params)
    enc = [p for p in encoder.parameters() if p.requires_grad]
    if head_modules is not None:
        matrices = matrix_parameters(encoder, *head_modules)
    else:
        matrices = matrix_parameters(encoder) | {id(p) for p in head_params
                                                 if p.ndim == 2 and min(p.shape) > 1}
    return OPTIMIZERS[spec.kind](spec, _groups(enc, head_params, lr, head_lr), matrices)


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _linear(progress: float) -> float:
    return max(0.0, 1.0 - progress)


def _constant(progress: float) -> float:
    return 1.0


# the rate's multiplier after warm-up, at `progress` in [0, 1] of the remaining steps
SCHEDULES: dict[str, Callable[[float], float]] = {"cosine": _cosine, "linear": _linear, "constant": _constant}


def schedule_factor(kind: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up, then the `SCHEDULES[kind]` decay."""
    decay = SCHEDULES[kind]

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return decay(min(max(progress, 0.0), 1.0))

    return factor


def spec_schedule(spec: Schedule, total_steps: int) -> Callable[[int], float]:
    """The multiplier per step of a `training.specs.Schedule` over `total_steps` steps."""
    return schedule_factor(spec.kind, int(spec.warmup_ratio * total_steps), total_steps)
