"""Checkpoints of a training run: `checkpoint/` (the model, as `.save` writes it) and `state/`
(optimiser, schedule, random-number state, epoch), written after every epoch.

`state/` also holds what the loss learned (Bradley-Terry's scale per source): training state,
resumed, never exported. `resume=True` continues an interrupted run to the same result as an uninterrupted one
(bit-identical on CPU). Both directories are written to a temporary directory and renamed into
place, and `state/` records the hash of the checkpoint's weights, so a kill at any moment leaves a
complete earlier pair to resume from. Resuming with a changed spec (other than `progress` /
`export`) is refused. Tensors go to safetensors with a JSON skeleton: no pickle.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from routerdb.bundle import sha256_file
from training.formats import CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS
from training.model.seams import Trainable
from training.specs import migrate_flat_loss
from training.trainer.losses import PairLoss
from training.trainer.optim import Optimizers


@dataclass(frozen=True)
class TrainerState:
    """What a run carries between steps beside the model: optimisers (with their schedules), the
    batch order's random-number generator, and the loss (with its learned parts)."""

    optim: Optimizers
    generator: torch.Generator
    loss: PairLoss


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


def save_checkpoint(model: Trainable, state: TrainerState, run_dir: Path, epoch: int, history) -> None:
    """Write checkpoint/ and state/ for `epoch`; the previous pair stays until both are in place."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_pair(model, state, tmp, epoch, history)
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


def _write_pair(model: Trainable, trainer: TrainerState, tmp: Path, epoch: int, history) -> None:
    """checkpoint/ and state/ of `epoch` into `tmp`."""
    model.save(tmp / "checkpoint", history)
    tensors: dict[str, torch.Tensor] = {}
    state = {"epoch": epoch, "history": history,
             # pairs this state with its checkpoint
             "weights_sha256": sha256_file(tmp / "checkpoint" / CHECKPOINT_WEIGHTS),
             "optim": _flatten(trainer.optim.state_dict(), tensors),
             "generator": _flatten(trainer.generator.get_state(), tensors),
             "loss": _flatten(dict(trainer.loss.state_dict()), tensors),
             "torch_rng": _flatten(torch.get_rng_state(), tensors)}
    if torch.cuda.is_available():
        state["cuda_rng"] = _flatten(torch.cuda.get_rng_state_all(), tensors)
    (tmp / "state").mkdir()
    save_file(tensors, str(tmp / "state" / "tensors.safetensors"))
    (tmp / "state" / "state.json").write_text(json.dumps(state))


_PAIR = ("checkpoint", "state")


def find_checkpoint(run_dir: Path) -> tuple[Path, Path, dict] | None:
    """(checkpoint dir, state dir, state) of the newest complete epoch saved in `run_dir`, or None."""
    found = []
    for ck in (run_dir / "checkpoint", run_dir / ".checkpoint.old"):
        for st in (run_dir / "state", run_dir / ".state.old"):
            if not ((ck / CHECKPOINT_WEIGHTS).is_file() and (st / "state.json").is_file()):
                continue
            state = json.loads((st / "state.json").read_text())
            if state.get("weights_sha256") == sha256_file(ck / CHECKPOINT_WEIGHTS):
                found.append((state["epoch"], ck, st, state))
    if not found:
        return None
    _, ck, st, state = max(found, key=lambda f: f[0])
    return ck, st, state


# Fields that may change between an interrupted run and its resumption without changing the result.
_RESUME_FREE = {"progress", "export"}


def _check_same_config(model: Trainable, checkpoint: Path) -> None:
    saved = migrate_flat_loss(json.loads((checkpoint / CHECKPOINT_CONFIG).read_text())["config"])
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


def restore_checkpoint(model: Trainable, trainer: TrainerState, checkpoint: Path, state_dir: Path,
                       state: dict):
    """Load the checkpoint's weights and the state's optimiser and random-number state; returns
    (epochs done, history so far)."""
    _check_same_config(model, checkpoint)
    model.load_state_tensors(load_file(str(checkpoint / CHECKPOINT_WEIGHTS)))
    tensors = load_file(str(state_dir / "tensors.safetensors"))
    trainer.optim.load_state_dict(_unflatten(state["optim"], tensors))
    trainer.generator.set_state(_unflatten(state["generator"], tensors))
    trainer.loss.load_state_dict(_unflatten(state.get("loss", {"__dict__": []}), tensors))
    torch.set_rng_state(_unflatten(state["torch_rng"], tensors))
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(_unflatten(state["cuda_rng"], tensors))
    return state["epoch"], state["history"]
