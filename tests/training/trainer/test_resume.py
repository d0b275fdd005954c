"""Reproducibility and resumption: same spec + seed -> bit-identical weights on CPU, and an
interrupted run resumed from its last checkpoint ends exactly where an uninterrupted run does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import training.trainer.loop as loop
from tests import tiny_models
from training.router import TransformerEmbeddingModel
from training.specs import ValidationSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

EPOCHS = 4
KILLED_AFTER = 2


class Killed(RuntimeError):
    """Stands in for a kill (SIGKILL, Ctrl-C, a lost machine) at a chosen moment."""


@pytest.fixture(scope="module")
def data():
    return tiny_models.synthetic_scores(24)


def _model(encoder: Path, **fields) -> TransformerEmbeddingModel:
    base = {"epochs": EPOCHS, "batch_size": 24, "progress": False, "head": {"hidden_dims": [8]}}
    return TransformerEmbeddingModel(encoder=str(encoder), **{**base, **fields})


def _train(model, data, run_dir=None, resume=False):
    return model.train(data, validation_split=ValidationSplit(0.25, 0), run_dir=run_dir, resume=resume)


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different[:5]}"


def _kill_after_epoch(monkeypatch, epoch: int) -> None:
    real = loop.save_checkpoint

    def checkpoint_then_die(model, state, run_dir, done, history):
        real(model, state, run_dir, done, history)
        if done == epoch:
            raise Killed(f"killed after epoch {done}")

    monkeypatch.setattr(loop, "save_checkpoint", checkpoint_then_die)


CASES = [  # (encoder, method, optimizer): every optimiser, every encoder family, a 4-bit base
    ("bert", "lora", "adamw"),
    ("llama", "full", "muon"),
    ("gpt2", "last_layers", "adam"),
    ("bert", "qlora", "adamw"),
]


@pytest.mark.parametrize("kind, method, optimizer", CASES)
def test_same_spec_and_seed_give_bit_identical_weights(tiny_encoders, data, kind, method, optimizer):
    fields = {"finetuning": {"kind": method}, "optimizer": {"kind": optimizer}, "epochs": 2}
    first = _model(tiny_encoders[kind], **fields)
    second = _model(tiny_encoders[kind], **fields)
    h1, h2 = _train(first, data), _train(second, data)
    _assert_identical(first.state_tensors(), second.state_tensors())
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]


def test_another_seed_gives_other_weights(tiny_encoders, data):
    a = _model(tiny_encoders["bert"], epochs=1, seed=1)
    b = _model(tiny_encoders["bert"], epochs=1, seed=2)
    _train(a, data), _train(b, data)
    wa, wb = a.state_tensors(), b.state_tensors()
    assert not torch.equal(wa["model_embeddings"], wb["model_embeddings"])


@pytest.mark.parametrize("kind, method, optimizer", CASES)
def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_encoders, data, tmp_path, monkeypatch,
                                                          kind, method, optimizer):
    fields = {"finetuning": {"kind": method}, "optimizer": {"kind": optimizer}}
    straight = _model(tiny_encoders[kind], **fields)
    _train(straight, data)

    with monkeypatch.context() as patch:
        _kill_after_epoch(patch, KILLED_AFTER)
        with pytest.raises(Killed):
            _train(_model(tiny_encoders[kind], **fields), data, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "state" / "state.json").read_text())["epoch"] == KILLED_AFTER

    resumed = _model(tiny_encoders[kind], **fields)  # a new process: nothing carried over in memory
    history = _train(resumed, data, tmp_path / "run", resume=True)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in straight.history]
    _assert_identical(straight.state_tensors(), resumed.state_tensors())
    saved = load_file(tmp_path / "run" / "checkpoint" / "weights.safetensors")
    _assert_identical(straight.state_tensors(), saved)


@pytest.mark.parametrize("renames_before_kill", [1, 2, 3])
def test_kill_while_saving_resumes_from_the_previous_epoch(tiny_encoders, data, tmp_path, monkeypatch,
                                                           renames_before_kill):
    straight = _model(tiny_encoders["bert"], finetuning={"kind": "bitfit"})
    _train(straight, data)

    real_rename, calls = Path.rename, []

    def rename(self, target):
        if len(calls) >= renames_before_kill:
            raise Killed("killed between renames")
        calls.append(self)
        return real_rename(self, target)

    real_checkpoint = loop.save_checkpoint

    def checkpoint(model, state, run_dir, done, history):
        if done == KILLED_AFTER + 1:  # die part-way through swapping epoch 3's files into place
            monkeypatch.setattr(Path, "rename", rename)
        real_checkpoint(model, state, run_dir, done, history)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "save_checkpoint", checkpoint)
        with pytest.raises(Killed):
            _train(_model(tiny_encoders["bert"], finetuning={"kind": "bitfit"}), data, tmp_path / "run")
        monkeypatch.setattr(Path, "rename", real_rename)
    ck, _, state = loop.find_checkpoint(tmp_path / "run")
    assert state["epoch"] in (KILLED_AFTER, KILLED_AFTER + 1)
    resumed = _model(tiny_encoders["bert"], finetuning={"kind": "bitfit"})
    _train(resumed, data, tmp_path / "run", resume=True)
    _assert_identical(straight.state_tensors(), resumed.state_tensors())


def test_resume_with_a_changed_spec_is_refused(tiny_encoders, data, tmp_path):
    _train(_model(tiny_encoders["bert"], finetuning={"kind": "bitfit"}, epochs=1), data, tmp_path / "run")
    changed = _model(tiny_encoders["bert"], finetuning={"kind": "bitfit", "lr": 0.5}, epochs=1)
    with pytest.raises(ValueError, match=r"spec changed since it was written \(finetuning: .*'lr': 0\.5"):
        _train(changed, data, tmp_path / "run", resume=True)


def test_resume_without_a_checkpoint_starts_fresh(tiny_encoders, data, tmp_path, caplog):
    model = _model(tiny_encoders["bert"], finetuning={"kind": "bitfit"}, epochs=1)
    with caplog.at_level("WARNING", logger="training.trainer.loop"):
        history = _train(model, data, tmp_path / "empty", resume=True)
    assert len(history) == 1 and "no complete checkpoint" in caplog.text


def test_fit_cli_resume_continues_an_interrupted_run(tiny_encoders, tmp_path, monkeypatch):
    """`python -m training.fit spec --resume` after a kill: same checkpoint and bundle scores."""
    import numpy as np
    import pyarrow.parquet as pq

    from routerdb.router import Router
    from training import fit

    pq.write_table(tiny_models.synthetic_scores(24), tmp_path / "scores.parquet")

    def spec_file(name: str) -> str:
        spec = {"data": {"train": [str(tmp_path / "scores.parquet")],
                         "validation": {"fraction": 0.25, "seed": 0}},
                "output": {"run_dir": str(tmp_path / name / "run"),
                           "bundle_dir": str(tmp_path / name / "bundle")},
                "encoder": str(tiny_encoders["llama"]), "finetuning": {"kind": "lora"}, "epochs": EPOCHS,
                "batch_size": 24, "head": {"hidden_dims": [8]}, "progress": False,
                "export": {"verify_prompts": 4}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(spec))
        return str(path)

    assert fit.main([spec_file("straight")]) == 0
    resumed_spec = spec_file("resumed")
    with monkeypatch.context() as patch:
        _kill_after_epoch(patch, KILLED_AFTER)
        with pytest.raises(Killed):
            fit.main([resumed_spec])
    assert not (tmp_path / "resumed" / "bundle").exists()
    assert fit.main([resumed_spec, "--resume"]) == 0

    runs = ("straight", "resumed")
    _assert_identical(*[load_file(tmp_path / n / "run" / "checkpoint" / "weights.safetensors") for n in runs])
    prompts = tiny_models.CORPUS[:10]
    scores = [Router.for_verification(tmp_path / n / "bundle").score(prompts)
              for n in runs]
    np.testing.assert_array_equal(*scores)
