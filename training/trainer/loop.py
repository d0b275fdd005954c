"""The training loop behind `TransformerEmbeddingModel.train`: epochs, steps, validation.

Batches are built from whole prompts: a step encodes a set of distinct prompts once and uses all
of their comparison pairs (about `batch_size` pairs), because the encoder is the whole cost. With
`balance_model_samples`, pairs are drawn by WeightedRandomSampler instead (inverse frequency of
the pair's rarer LLM). After each epoch the run directory gets a checkpoint
(`training.trainer.checkpoint`), from which `resume=True` continues bit-identically.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from routerdb.features import compute_features
from training.model.heads import Head
from training.model.seams import Trainable
from training.trainer.checkpoint import TrainerState, find_checkpoint, restore_checkpoint, save_checkpoint
from training.trainer.losses import PairLoss, build_loss, point_loss
from training.trainer.optim import Optimizers, build_optimizers, spec_schedule
from training.trainer.pairs import PairArrays, PointArrays
from training.trainer.sampling import (
    balanced_batches,
    balanced_weights,
    model_shares,
    pair_weights,
    prompt_batches,
)

log = logging.getLogger(__name__)


@dataclass
class TrainRows:
    """What the loss is fitted on: pairs (ties and weights applied), per-model scores (with
    `loss.pointwise_weight`), and each pair's source index (into `sources`, for `source_scale`)."""

    pairs: PairArrays
    points: PointArrays | None
    pair_source: np.ndarray  # [pairs] index into `sources`
    sources: list[str]  # the pairs' distinct `source` values, sorted

    def batch_keys(self) -> np.ndarray:
        """The prompt of every pair, then of every point: batches take whole prompts of both."""
        if self.points is None:
            return self.pairs.p
        return np.concatenate([self.pairs.p, self.points.p])

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pair rows, point rows) of a batch drawn over `batch_keys`."""
        n = len(self.pairs)
        return rows[rows < n], rows[rows >= n] - n


@dataclass
class Inputs:
    """What the steps read about every prompt of the run, computed once."""

    ids: list[list[int]]  # token ids per prompt
    features: torch.Tensor  # [P, F] raw prompt features (F = 0 without features)
    cached: torch.Tensor | None  # [P, H] pooled vectors of a frozen encoder, else None


@dataclass(frozen=True)
class TrainResult:
    """What a run learned beside the model's weights: one metrics row per epoch, and the pairwise
    loss as trained (its learned parts, e.g. Bradley-Terry's scale per source)."""

    history: list[dict[str, float]]
    loss: PairLoss


def fit_loop(model: Trainable, train_pairs: pa.Table, val_pairs: pa.Table, *, run_dir=None,
             resume: bool = False) -> TrainResult:
    """Train `model` (a built router) for `config.epochs`; one metrics row each."""
    cfg = model.config
    prompts = sorted(set(train_pairs["prompt"].to_pylist()) | set(val_pairs["prompt"].to_pylist()))
    train, val = _train_rows(model, train_pairs, val_pairs, prompts)
    inputs = _inputs(model, prompts)
    weights = _balancing(model, train.pairs)
    loss = build_loss(cfg.loss, train.sources).to(model.device)
    steps = _count_batches(train, weights, cfg.batch_size, cfg.seed) * cfg.epochs
    state = TrainerState(_optimizers(model, loss, steps), torch.Generator().manual_seed(cfg.seed), loss)
    start_epoch, history = _resume_point(model, state, run_dir, resume)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        losses = _epoch(model, state, train, weights, inputs, epoch)
        if epoch + 1 == cfg.epochs:
            model.finish_training(train_pairs)  # e.g. the LLMs' measured regions (head.coverage)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
               **evaluate_pairs(model, loss, val, inputs), "seconds": time.perf_counter() - t0}
        history.append(row)
        log.info("epoch %d: train loss %.4f, validation loss %.4f, validation accuracy %.4f (%.0fs)",
                 epoch + 1, row["train_loss"], row["val_loss"], row["val_accuracy"], row["seconds"])
        if run_dir is not None:
            save_checkpoint(model, state, Path(run_dir), epoch + 1, history)
    return TrainResult(history, loss)


def _train_rows(model: Trainable, train_pairs: pa.Table, val_pairs: pa.Table,
                prompts: list[str]) -> tuple[TrainRows, PairArrays]:
    """(the rows the loss is fitted on, decisive validation pairs)."""
    cfg = model.config.loss
    prompt_index = {p: i for i, p in enumerate(prompts)}
    llm_index = {m: j for j, m in enumerate(model.llm_names)}
    points = PointArrays(train_pairs, prompt_index, llm_index) if cfg.pointwise_weight > 0 else None
    if points is not None:
        _check_scores(points.y)
        log.info("pointwise loss (weight %g) on %d per-model scores", cfg.pointwise_weight, len(points))
    if cfg.pair_sources == "pairwise":  # per-model scores go to the pointwise loss only
        train_pairs = train_pairs.filter(pc.invert(pc.is_valid(train_pairs["score_a"])))
    pairs, val = _pair_arrays(model, train_pairs, val_pairs, prompt_index, llm_index)
    sources = sorted(set(pairs.source.tolist()))
    index = {s: k for k, s in enumerate(sources)}
    pair_source = np.array([index[s] for s in pairs.source.tolist()], dtype=np.int64)
    return TrainRows(pairs, points, pair_source, sources), val


def _check_scores(y: np.ndarray) -> None:
    if y.min() < 0 or y.max() > 1:
        raise ValueError(f"pointwise_weight fits P(correct) to per-model scores, which here range over "
                         f"[{y.min():g}, {y.max():g}]; allowed: [0, 1] (correctness, or a grade / its "
                         "maximum). Rescale the scores, or set pointwise_weight to 0.")


def _pair_arrays(model: Trainable, train_pairs: pa.Table, val_pairs: pa.Table, prompt_index: dict[str, int],
                 llm_index: dict[str, int]) -> tuple[PairArrays, PairArrays]:
    """(training pairs with ties and weights applied, decisive validation pairs)."""
    cfg = model.config.loss
    train = PairArrays(train_pairs, prompt_index, llm_index)
    if not np.any(train.label != 0) and cfg.pointwise_weight == 0:
        raise ValueError("no decisive training pairs (every pair is a tie); ranking needs winners")
    train = train.ties_as_half_wins() if cfg.ties == "half" else train.decisive()
    train.weight = pair_weights(train.p, train.source, train.weight, cfg.prompt_weighting,
                                dict(cfg.source_weights))
    val = PairArrays(val_pairs, prompt_index, llm_index).decisive()
    what = "pairs (each tie twice, as half a win for each side)" if cfg.ties == "half" else "decisive pairs"
    log.info("training on %d %s over %d prompts; validating on %d decisive pairs",
             len(train), what, len(np.unique(train.p)), len(val))
    return train, val


def _inputs(model: Trainable, prompts: list[str]) -> Inputs:
    features = torch.from_numpy(compute_features(prompts)).to(model.device)
    if not model.uses_features:
        features = features[:, :0]
    cached = model.embed_prompts(prompts, progress=model.config.progress) if model.frozen_encoder else None
    return Inputs(model.token_ids(prompts), features, cached)


def _balancing(model: Trainable, train: PairArrays) -> np.ndarray | None:
    """Per-pair sampling weights with `balance_model_samples` (logged before / after), else None."""
    if not model.config.balance_model_samples:
        return None
    weights = balanced_weights(train.a, train.b, len(model.llm_names))
    for label, w in (("before", None), ("after", weights)):
        shares = model_shares(train.a, train.b, model.llm_names, w)
        log.info("per-LLM share of training pairs %s balancing: %s", label,
                 ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    return weights


def _optimizers(model: Trainable, loss: PairLoss, total_steps: int) -> Optimizers:
    """The encoder at the method's rate; head, LLM vectors and the loss's own parameters (a scale
    per source) at x head.lr_multiplier (the method's rate alone when the encoder is frozen), on
    the spec's schedule."""
    cfg, groups = model.config, model.parameter_groups()
    lr = cfg.finetuning.lr
    head_lr = lr if model.frozen_encoder else lr * cfg.head.lr_multiplier
    optim = build_optimizers(cfg.optimizer, groups.encoder, [*groups.head, *loss.parameters()], lr, head_lr,
                             head_modules=groups.head_modules)
    optim.set_schedule(spec_schedule(cfg.schedule, total_steps))
    return optim


def _resume_point(model: Trainable, state: TrainerState, run_dir, resume: bool) -> tuple[int, list[dict]]:
    """(epochs already done, their history): from the run's newest checkpoint with `resume`."""
    saved = find_checkpoint(Path(run_dir)) if resume and run_dir is not None else None
    if saved is not None:
        start_epoch, history = restore_checkpoint(model, state, *saved)
        log.info("resuming after epoch %d of %d from %s", start_epoch, model.config.epochs, saved[0])
        return start_epoch, history
    if resume:
        log.warning("no complete checkpoint in %s to resume from: training from the start", run_dir)
    return 0, []


def _epoch(model: Trainable, state: TrainerState, train: TrainRows, weights, inputs: Inputs,
           epoch: int) -> list[float]:
    cfg = model.config
    if weights is None:
        batches = prompt_batches(train.batch_keys(), cfg.batch_size, state.generator)
    else:
        batches = balanced_batches(weights, cfg.batch_size, state.generator)
    model.set_training(True)
    losses: list[float] = []
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress,
               unit="step", leave=False)
    for rows in bar:
        losses.append(train_step(model, state, train, rows, inputs))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return losses


def _count_batches(train: TrainRows, weights, batch_size: int, seed: int) -> int:
    if weights is not None:
        return math.ceil(len(train.pairs) / batch_size)
    return len(prompt_batches(train.batch_keys(), batch_size, torch.Generator().manual_seed(seed)))


def _pooled(model: Trainable, rows_prompts, inputs: Inputs) -> torch.Tensor:
    if inputs.cached is not None:
        return inputs.cached[torch.as_tensor(rows_prompts, device=inputs.cached.device)]
    input_ids, mask = model.tensors([inputs.ids[i] for i in rows_prompts])
    return model.encode(input_ids, mask)


def train_step(model: Trainable, state: TrainerState, train: TrainRows, rows: np.ndarray,
               inputs: Inputs) -> float:
    """One optimiser step on the batch `rows` (drawn over `train.batch_keys()`); returns the loss."""
    cfg, optim = model.config, state.optim
    pair_rows, point_rows = train.split(rows)
    pairs, points = train.pairs, train.points
    prompt_ids = [pairs.p[pair_rows]] + ([points.p[point_rows]] if points is not None else [])
    uniq = np.unique(np.concatenate(prompt_ids))
    # only the LLMs of this batch are scored: a batch of one source names a few of all M LLMs,
    # and the head's cost grows with prompts x LLMs scored
    llm_ids = [pairs.a[pair_rows], pairs.b[pair_rows]]
    if points is not None:
        llm_ids.append(points.m[point_rows])
    cols = np.unique(np.concatenate(llm_ids))
    table = model.llm_embeddings  # [M, D]
    features = inputs.features[torch.as_tensor(uniq, device=inputs.features.device)]
    raw = model.raw_scores(_pooled(model, uniq, inputs), features,
                           table[torch.as_tensor(cols, device=table.device)])  # [U, C]
    loss = _pair_part(model.head, state.loss, train, pair_rows, raw, uniq, cols)
    if points is not None and len(point_rows):
        loss = loss + cfg.loss.pointwise_weight * _point_part(model.head, points, point_rows, raw, uniq, cols)
    optim.zero_grad()
    loss.backward()
    if cfg.grad_clip is not None:
        params = [p for o in optim.optimizers for g in o.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optim.step()
    return float(loss.detach())


def _cells(raw: torch.Tensor, uniq: np.ndarray, cols: np.ndarray, p: np.ndarray, m: np.ndarray):
    """raw[prompt p, LLM m] for rows given as global prompt and LLM indices."""
    r = torch.as_tensor(np.searchsorted(uniq, p), device=raw.device)
    c = torch.as_tensor(np.searchsorted(cols, m), device=raw.device)
    return raw[r, c]


def _pair_part(head: Head, pair_loss: PairLoss, train: TrainRows, rows: np.ndarray, raw, uniq,
               cols) -> torch.Tensor:
    pairs = train.pairs
    if not len(rows):
        return raw.sum() * 0.0
    raw_a = _cells(raw, uniq, cols, pairs.p[rows], pairs.a[rows])
    raw_b = _cells(raw, uniq, cols, pairs.p[rows], pairs.b[rows])
    label = torch.as_tensor(pairs.label[rows], device=raw.device)
    weight = None
    if not np.all(pairs.weight == 1.0):
        weight = torch.as_tensor(pairs.weight[rows], dtype=raw.dtype, device=raw.device)
    source = torch.as_tensor(train.pair_source[rows], device=raw.device)
    loss = pair_loss.pair(head, raw_a, raw_b, label, weight=weight, source=source)
    if weight is not None:
        loss = loss * weight.mean()  # mean of weight x loss: weights (mean 1 overall) scale steps too
    return loss


def _point_part(head: Head, points: PointArrays, rows: np.ndarray, raw, uniq, cols) -> torch.Tensor:
    cells = _cells(raw, uniq, cols, points.p[rows], points.m[rows])
    return point_loss(head, cells, torch.as_tensor(points.y[rows], device=raw.device))


@torch.no_grad()
def evaluate_pairs(model: Trainable, pair_loss: PairLoss, pairs: PairArrays,
                   inputs: Inputs) -> dict[str, float]:
    """Validation loss (every source at scale 1) and pairwise accuracy (decisive pairs; equal
    scores count half)."""
    if not len(pairs):
        return {"val_loss": float("nan"), "val_accuracy": float("nan")}
    model.set_training(False)
    uniq, inv = np.unique(pairs.p, return_inverse=True)
    if inputs.cached is not None:
        pooled = inputs.cached[torch.as_tensor(uniq, device=inputs.cached.device)]
    else:
        pooled = torch.cat([_pooled(model, uniq[i:i + 64], inputs) for i in range(0, len(uniq), 64)])
    features = inputs.features[torch.as_tensor(uniq, device=inputs.features.device)]
    raw = model.raw_scores(pooled, features, model.llm_embeddings)
    inv_t = torch.as_tensor(inv, device=raw.device)
    raw_a = raw[inv_t, torch.as_tensor(pairs.a, device=raw.device)]
    raw_b = raw[inv_t, torch.as_tensor(pairs.b, device=raw.device)]
    label = torch.as_tensor(pairs.label, device=raw.device)
    head = model.head
    loss = pair_loss.pair(head, raw_a, raw_b, label)
    signed = (head.squash(raw_a) - head.squash(raw_b)) * label
    accuracy = ((signed > 0).float() + 0.5 * (signed == 0).float()).mean()
    return {"val_loss": float(loss), "val_accuracy": float(accuracy)}
