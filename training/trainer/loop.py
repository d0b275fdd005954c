"""The training loop behind `TransformerEmbeddingModel.train`: epochs, validation, checkpoints.

After each epoch the run directory gets `checkpoint/` (the model, as `.save` writes it) and
`state/` (optimiser, schedule, random-number state, epoch), so `resume=True` continues an
interrupted run to the same result as an uninterrupted one (bit-identical on CPU). Both are
written to a temporary directory and renamed into place, and `state/` records the hash of the
checkpoint's weights, so a kill at any moment leaves a complete earlier pair to resume from.
Resuming with a changed spec (other than `progress` / `export`) is refused.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from routerdb.features import compute_features
from training.model.head import ranking_loss
from training.trainer.optim import build_optimizers, schedule_factor
from training.trainer.sampling import (
    balanced_batches,
    balanced_weights,
    model_shares,
    pair_weights,
    prompt_batches,
)

log = logging.getLogger(__name__)


class PairArrays:
    """Pairs as index arrays into a bank of distinct prompts and the LLM list."""

    def __init__(self, pairs: pa.Table, prompt_index: dict[str, int], model_index: dict[str, int]):
        self.p = np.array([prompt_index[p] for p in pairs["prompt"].to_pylist()], dtype=np.int64)
        self.a = np.array([model_index[m] for m in pairs["model_a"].to_pylist()], dtype=np.int64)
        self.b = np.array([model_index[m] for m in pairs["model_b"].to_pylist()], dtype=np.int64)
        self.label = pairs["label"].to_numpy().astype(np.int64)
        self.source = np.asarray(pairs["source"].to_pylist(), dtype=object)
        self.weight = np.ones(len(self.label))  # loss weight per pair (sampling.pair_weights)

    def _subset(self, rows) -> PairArrays:
        out = object.__new__(PairArrays)
        for name, values in vars(self).items():
            setattr(out, name, values[rows])
        return out

    def decisive(self) -> PairArrays:
        return self._subset(self.label != 0)

    def ties_as_half_wins(self) -> PairArrays:
        """The decisive pairs, plus every tie twice (once won by each side) at half weight."""
        tie = np.flatnonzero(self.label == 0)
        rows = np.concatenate([np.flatnonzero(self.label != 0), tie, tie])
        out = self._subset(rows)
        n = len(tie)
        if n:
            out.label[-2 * n:] = np.repeat([1, -1], n)
            out.weight[-2 * n:] *= 0.5
        return out

    def __len__(self) -> int:
        return len(self.label)


def fit_loop(model, train_pairs: pa.Table, val_pairs: pa.Table, *, run_dir=None,
             resume: bool = False) -> list[dict[str, float]]:
    cfg, net = model.config, model.net
    prompts = sorted(set(train_pairs["prompt"].to_pylist()) | set(val_pairs["prompt"].to_pylist()))
    prompt_index = {p: i for i, p in enumerate(prompts)}
    model_index = {m: j for j, m in enumerate(model.model_names)}
    train = PairArrays(train_pairs, prompt_index, model_index)
    if not np.any(train.label != 0):
        raise ValueError("no decisive training pairs (every pair is a tie); ranking needs winners")
    train = train.ties_as_half_wins() if cfg.ties == "half" else train.decisive()
    train.weight = pair_weights(train.p, train.source, train.weight, cfg.prompt_weighting,
                                dict(cfg.source_weights))
    val = PairArrays(val_pairs, prompt_index, model_index).decisive()
    what = "pairs (each tie twice, as half a win for each side)" if cfg.ties == "half" else "decisive pairs"
    log.info("training on %d %s over %d prompts; validating on %d decisive pairs",
             len(train), what, len(np.unique(train.p)), len(val))
    ids = model._encode_ids(prompts)
    features = torch.from_numpy(compute_features(prompts)).to(model.device)
    if net.feature_norm is None:
        features = features[:, :0]
    cached = model.embed_prompts(prompts, progress=cfg.progress) if model.frozen_encoder else None

    weights = None
    if cfg.balance_model_samples:
        weights = balanced_weights(train.a, train.b, len(model.model_names))
        for label, w in (("before", None), ("after", weights)):
            shares = model_shares(train.a, train.b, model.model_names, w)
            log.info("per-LLM share of training pairs %s balancing: %s", label,
                     ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    generator = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = _count_batches(train, weights, cfg.batch_size, cfg.seed)
    total = steps_per_epoch * cfg.epochs
    lr = cfg.finetuning.lr
    head_lr = lr if model.frozen_encoder else lr * cfg.head.lr_multiplier
    optim = build_optimizers(cfg.optimizer, net.encoder, model.head_parameters(), lr, head_lr,
                             head_modules=[net.head])
    optim.set_schedule(schedule_factor(cfg.schedule.kind, int(cfg.schedule.warmup_ratio * total), total))

    history: list[dict[str, float]] = []
    start_epoch = 0
    saved = find_checkpoint(Path(run_dir)) if resume and run_dir is not None else None
    if saved is not None:
        start_epoch, history = _restore(model, optim, generator, *saved)
        log.info("resuming after epoch %d of %d from %s", start_epoch, cfg.epochs, saved[0])
    elif resume:
        log.warning("no complete checkpoint in %s to resume from: training from the start", run_dir)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        if weights is None:
            batches = prompt_batches(train.p, cfg.batch_size, generator)
        else:
            batches = balanced_batches(weights, cfg.batch_size, generator)
        net.train()
        if model.frozen_encoder:
            net.encoder.eval()
        losses = []
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress,
                   unit="step", leave=False)
        for rows in bar:
            loss = _step(model, optim, train, rows, ids, features, cached)
            losses.append(loss)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
               **evaluate_pairs(model, val, ids, features, cached),
               "seconds": time.perf_counter() - t0}
        history.append(row)
        log.info("epoch %d: train loss %.4f, validation loss %.4f, validation accuracy %.4f (%.0fs)",
                 epoch + 1, row["train_loss"], row["val_loss"], row["val_accuracy"], row["seconds"])
        model.history = history
        if run_dir is not None:
            _checkpoint(model, optim, generator, Path(run_dir), epoch + 1, history)
    return history


def _count_batches(train: PairArrays, weights, batch_size: int, seed: int) -> int:
    if weights is not None:
        return math.ceil(len(train) / batch_size)
    return len(prompt_batches(train.p, batch_size, torch.Generator().manual_seed(seed)))


def _pooled(model, rows_prompts, ids, cached) -> torch.Tensor:
    if cached is not None:
        return cached[torch.as_tensor(rows_prompts, device=cached.device)]
    input_ids, mask = model._tensors([ids[i] for i in rows_prompts])
    return model.net.embed(input_ids, mask)


def _step(model, optim, train: PairArrays, rows, ids, features, cached) -> float:
    cfg = model.config
    uniq, inv = np.unique(train.p[rows], return_inverse=True)
    # only the LLMs of this batch are scored: a batch of one source names a few of all M LLMs,
    # and the head's cost grows with prompts x LLMs scored
    cols, col_inv = np.unique(np.concatenate([train.a[rows], train.b[rows]]), return_inverse=True)
    col_a, col_b = np.split(col_inv, 2)
    pooled = _pooled(model, uniq, ids, cached)
    table = model.model_embeddings  # [M, D]
    scores = model.net.score(pooled, features[torch.as_tensor(uniq, device=features.device)],
                             table[torch.as_tensor(cols, device=table.device)])  # [U, C]
    inv_t = torch.as_tensor(inv, device=scores.device)
    s_a = scores[inv_t, torch.as_tensor(col_a, device=scores.device)]
    s_b = scores[inv_t, torch.as_tensor(col_b, device=scores.device)]
    label = torch.as_tensor(train.label[rows], device=scores.device)
    weight = None
    if not np.all(train.weight == 1.0):
        weight = torch.as_tensor(train.weight[rows], dtype=s_a.dtype, device=scores.device)
    loss = ranking_loss(s_a, s_b, label, kind=cfg.loss, margin=cfg.margin, weight=weight)
    if weight is not None:
        loss = loss * weight.mean()  # mean of weight x loss: weights (mean 1 overall) scale steps too
    optim.zero_grad()
    loss.backward()
    if cfg.grad_clip is not None:
        params = [p for o in optim.optimizers for g in o.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optim.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate_pairs(model, pairs: PairArrays, ids, features, cached) -> dict[str, float]:
    """Validation loss and pairwise accuracy (decisive pairs; equal scores count half)."""
    if not len(pairs):
        return {"val_loss": float("nan"), "val_accuracy": float("nan")}
    model.net.eval()
    uniq, inv = np.unique(pairs.p, return_inverse=True)
    if cached is not None:
        pooled = cached[torch.as_tensor(uniq, device=cached.device)]
    else:
        pooled = torch.cat([_pooled(model, uniq[i:i + 64], ids, None) for i in range(0, len(uniq), 64)])
    scores = model.net.score(pooled, features[torch.as_tensor(uniq, device=features.device)],
                             model.model_embeddings)
    inv_t = torch.as_tensor(inv, device=scores.device)
    s_a = scores[inv_t, torch.as_tensor(pairs.a, device=scores.device)]
    s_b = scores[inv_t, torch.as_tensor(pairs.b, device=scores.device)]
    label = torch.as_tensor(pairs.label, device=scores.device)
    loss = ranking_loss(s_a, s_b, label, kind=model.config.loss, margin=model.config.margin)
    signed = (s_a - s_b) * label
    accuracy = ((signed > 0).float() + 0.5 * (signed == 0).float()).mean()
    return {"val_loss": float(loss), "val_accuracy": float(accuracy)}


# --- checkpoints -----------------------------------------------------------------------------


def _flatten(obj, tensors: dict[str, torch.Tensor], prefix: str = "t"):
    """JSON skeleton of a nested state with tensors moved into `tensors` (no pickle)."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    return obj


def _unflatten(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, dict) and "__list__" in obj:
        items = [_unflatten(v, tensors) for v in obj["__list__"]]
        return tuple(items) if obj["tuple"] else items
    return obj


def _checkpoint(model, optim, generator, run_dir: Path, epoch: int, history) -> None:
    """Write checkpoint/ and state/ for `epoch`; the previous pair stays until both are in place."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_pair(model, optim, generator, tmp, epoch, history)
    except BaseException:  # disk full, read-only, interrupted: leave no half-written pair behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # A kill between these renames leaves a mix of new, .old and missing directories;
    # find_checkpoint picks the newest checkpoint/state pair whose weights hash matches.
    for name in _PAIR:
        old = run_dir / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if (run_dir / name).exists():
            (run_dir / name).rename(old)
    for name in _PAIR:
        (tmp / name).rename(run_dir / name)
    for name in _PAIR:
        shutil.rmtree(run_dir / f".{name}.old", ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _write_pair(model, optim, generator, tmp: Path, epoch: int, history) -> None:
    """checkpoint/ and state/ of `epoch` into `tmp`."""
    from training.model.router import WEIGHTS_FILE

    model.save(tmp / "checkpoint")
    tensors: dict[str, torch.Tensor] = {}
    state = {"epoch": epoch, "history": history,
             "weights_sha256": _sha256(tmp / "checkpoint" / WEIGHTS_FILE),  # pairs state with checkpoint
             "optim": _flatten(optim.state_dict(), tensors),
             "generator": _flatten(generator.get_state(), tensors),
             "torch_rng": _flatten(torch.get_rng_state(), tensors)}
    if torch.cuda.is_available():
        state["cuda_rng"] = _flatten(torch.cuda.get_rng_state_all(), tensors)
    (tmp / "state").mkdir()
    save_file(tensors, str(tmp / "state" / "tensors.safetensors"))
    (tmp / "state" / "state.json").write_text(json.dumps(state))


_PAIR = ("checkpoint", "state")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_checkpoint(run_dir: Path) -> tuple[Path, Path, dict] | None:
    """(checkpoint dir, state dir, state) of the newest complete epoch saved in `run_dir`, or None."""
    from training.model.router import WEIGHTS_FILE

    found = []
    for ck in (run_dir / "checkpoint", run_dir / ".checkpoint.old"):
        for st in (run_dir / "state", run_dir / ".state.old"):
            if not ((ck / WEIGHTS_FILE).is_file() and (st / "state.json").is_file()):
                continue
            state = json.loads((st / "state.json").read_text())
            if state.get("weights_sha256") == _sha256(ck / WEIGHTS_FILE):
                found.append((state["epoch"], ck, st, state))
    if not found:
        return None
    _, ck, st, state = max(found, key=lambda f: f[0])
    return ck, st, state


# Fields that may change between an interrupted run and its resumption without changing the result.
_RESUME_FREE = {"progress", "export"}


def _check_same_config(model, checkpoint: Path) -> None:
    from training.model.router import CONFIG_FILE

    saved = json.loads((checkpoint / CONFIG_FILE).read_text())["config"]
    now = model.config.model_dump(mode="json")
    changed = sorted(k for k in set(saved) | set(now) if k not in _RESUME_FREE and saved.get(k) != now.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(
            f"cannot resume from {checkpoint}: the spec changed since it was written ({details}). "
            "Resume with the original spec, or train the changed spec in a new output.run_dir "
            "(to continue from these weights with new settings, TransformerEmbeddingModel.load the "
            "checkpoint and call .train)."
        )


def _restore(model, optim, generator, checkpoint: Path, state_dir: Path, state: dict):
    from training.model.router import WEIGHTS_FILE

    _check_same_config(model, checkpoint)
    model.load_state_tensors(load_file(str(checkpoint / WEIGHTS_FILE)))
    tensors = load_file(str(state_dir / "tensors.safetensors"))
    optim.load_state_dict(_unflatten(state["optim"], tensors))
    generator.set_state(_unflatten(state["generator"], tensors))
    torch.set_rng_state(_unflatten(state["torch_rng"], tensors))
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(_unflatten(state["cuda_rng"], tensors))
    return state["epoch"], state["history"]
