"""Optimisers and learning-rate schedules, one registry keyed by the spec's `kind`.

Parameter groups: the encoder's trainable parameters at the fine-tuning method's rate, the head
and the LLM embeddings at that rate x `head.lr_multiplier` (or the method's rate alone when the
encoder is frozen). Muon (torch.optim.Muon) orthogonalises updates of 2-D weight matrices only;
every other parameter (biases, norms, embedding tables, the head's output layer) goes to AdamW,
as Muon's authors recommend.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


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


def _adamw(spec, groups) -> Optimizers:
    return Optimizers([torch.optim.AdamW(groups, betas=spec.betas, weight_decay=spec.weight_decay)])


def _adam(spec, groups) -> Optimizers:
    return Optimizers([torch.optim.Adam(groups, betas=spec.betas)])


def _muon(spec, groups) -> Optimizers:
    matrices, others = [], []
    for g in groups:
        two_d = [p for p in g["params"] if p.ndim == 2 and p.shape[0] > 1 and p.shape[1] > 1]
        rest = [p for p in g["params"] if not any(p is q for q in two_d)]
        if two_d:
            matrices.append({"params": two_d, "lr": g["lr"]})
        if rest:
            others.append({"params": rest, "lr": g["lr"]})
    opts: list[torch.optim.Optimizer] = []
    if matrices:
        opts.append(torch.optim.Muon(matrices, momentum=spec.momentum, weight_decay=spec.weight_decay,
                                     adjust_lr_fn="match_rms_adamw"))
    if others:
        opts.append(torch.optim.AdamW(others, weight_decay=spec.weight_decay))
    return Optimizers(opts)


OPTIMIZERS: dict[str, Callable] = {"adamw": _adamw, "adam": _adam, "muon": _muon}


def build_optimizers(spec, encoder: nn.Module, head_params, lr: float, head_lr: float) -> Optimizers:
    enc = [p for p in encoder.parameters() if p.requires_grad]
    return OPTIMIZERS[spec.kind](spec, _groups(enc, head_params, lr, head_lr))


def schedule_factor(kind: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up, then cosine / linear decay or constant."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
