"""Faults: SIGKILL at random (seeded) moments, a full disk, a read-only output directory.

- `python -m training.fit` killed at random points and rerun with `--resume` ends with exactly the
  weights of an uninterrupted run.
- A bundle write killed at any moment leaves the previous bundle loadable and no half bundle
  visible; the next write removes what the killed one left and succeeds.
- A full disk or an unwritable directory is one clear error and leaves nothing half-written.

Everything here runs on tiny local models; the kill tests use subprocesses (a process cannot
SIGKILL itself and go on testing), the disk tests monkeypatch a write to raise ENOSPC / EACCES
(root ignores file permissions, so a real chmod test runs only for other users).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routerdb.bundle import Bundle, write_bundle
from routerdb.cli import main as cli_main
from tests import tiny_models
from tests.paths import REPO

# Kill moments are drawn from this seed, so a failure replays exactly; set ROUTERDB_FAULT_SEED to
# try other moments.
SEED = int(os.environ.get("ROUTERDB_FAULT_SEED", "20240607"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------ training.fit: kill and resume


def _fit_spec(tmp: Path, encoder: Path, data: Path, name: str) -> Path:
    spec = {"data": {"train": [str(data)], "validation": {"fraction": 0.25, "seed": 0}},
            "output": {"run_dir": str(tmp / name / "run"), "bundle_dir": str(tmp / name / "bundle")},
            "encoder": {"name": str(encoder)}, "finetuning": {"kind": "lora", "rank": 4},
            "epochs": 3, "batch_size": 8, "progress": False, "export": {"verify_prompts": 4}}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def _launch(spec: Path, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "training.fit", str(spec), *args], cwd=REPO, env=ENV,
                                stdout=out, stderr=subprocess.STDOUT)


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 120) -> float:
    start = time.monotonic()
    while not path.exists() and proc.poll() is None:
        assert time.monotonic() - start < limit, f"{path} did not appear"
        time.sleep(0.02)
    return time.monotonic()


def _weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "checkpoint" / "weights.safetensors"))


def _wait_for_export(parent: Path, proc: subprocess.Popen, limit: float = 300) -> bool:
    """Wait until `proc` starts writing its bundle (its `.bundle.tmp-PID-*` directory appears)."""
    start = time.monotonic()
    while proc.poll() is None:
        if any(parent.glob(f".bundle.tmp-{proc.pid}-*")):
            return True
        assert time.monotonic() - start < limit, "the export did not start"
        time.sleep(0.02)
    return False


@pytest.mark.timeout(900)
def test_fit_killed_at_random_points_then_resumed_matches_an_uninterrupted_run(tmp_path, tiny_encoders,
                                                                               tiny_bundle):
    data = tmp_path / "train.parquet"
    pq.write_table(tiny_models.synthetic_scores(24), data)
    encoder = tiny_encoders["bert"]
    whole, broken = _fit_spec(tmp_path, encoder, data, "whole"), _fit_spec(tmp_path, encoder, data, "broken")
    log = tmp_path / "fit.log"
    shutil.copytree(tiny_bundle, tmp_path / "broken" / "bundle")  # a previous bundle the export replaces
    previous = Bundle.load(tmp_path / "broken" / "bundle").digest

    # The uninterrupted run, timed from the moment training starts (spec.json written) to its end,
    # and from the moment its export starts writing the bundle.
    proc = _launch(whole, log)
    started = _wait_for(tmp_path / "whole" / "run" / "spec.json", proc)
    assert _wait_for_export(tmp_path / "whole", proc)
    exporting = time.monotonic()
    assert proc.wait(300) == 0, log.read_text()[-3000:]
    working, export = time.monotonic() - started, time.monotonic() - exporting

    # Kill the same run at a random moment of its working time, then at a random moment of its
    # export, resuming each time; then let it finish.
    rng = random.Random(SEED)
    moments = [rng.uniform(0.0, working), rng.uniform(0.0, export)]
    (tmp_path / "broken" / "run" / "spec.json").unlink(missing_ok=True)
    proc = _launch(broken, log, "--resume")
    _wait_for(tmp_path / "broken" / "run" / "spec.json", proc)
    time.sleep(moments[0])
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    proc = _launch(broken, log, "--resume")
    if _wait_for_export(tmp_path / "broken", proc):
        time.sleep(moments[1])
        proc.send_signal(signal.SIGKILL)
    proc.wait(300)
    # Killed half-way through its export: the previous bundle (or, past the swap, the new one) loads
    # and no half bundle is visible.
    assert _visible(tmp_path / "broken") == ["bundle", "run"]
    assert Bundle.load(tmp_path / "broken" / "bundle")  # whole: the previous one, or a verified new one
    proc = _launch(broken, log, "--resume")
    assert proc.wait(300) == 0, log.read_text()[-3000:]
    assert sorted(os.listdir(tmp_path / "broken")) == ["bundle", "run"]  # the killed export's leftovers went

    expected, got = _weights(tmp_path / "whole" / "run"), _weights(tmp_path / "broken" / "run")
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{name} (killed at {moments} s)")
    bundles = [Bundle.load(tmp_path / run / "bundle") for run in ("whole", "broken")]
    assert bundles[1].digest != previous
    np.testing.assert_array_equal(bundles[1].model_embeddings, bundles[0].model_embeddings)
    assert bundles[0].model_names == bundles[1].model_names


# ------------------------------------------------------------------ bundle writes: kill at any moment

# A bundle writer in a light (torch-free) process: it copies a real bundle's files slowly (so a
# kill lands mid-file), verifies with the Router like export_bundle does, and can SIGKILL itself at
# a named step. The ONNX export before it only fills the temporary directory, like the copy here.
WRITER = textwrap.dedent("""
    import os, shutil, signal, sys, time
    from pathlib import Path
    import routerdb.atomic as atomic
    import routerdb.bundle as rb
    from routerdb.router import Router

    source, target, note, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

    def die(step):
        if kill_at == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def write_files(tmp):
        for name in ("model.onnx", "tokenizer.json", "models.parquet"):
            data = (source / name).read_bytes()
            with open(tmp / name, "wb") as out:
                for start in range(0, len(data), 1 << 16):
                    out.write(data[start:start + (1 << 16)])
                    time.sleep(0.002)
            die("files")
        return {name: name for name in ("model.onnx", "tokenizer.json", "models.parquet")}

    def verify(tmp):
        Router(tmp, cache_size=0).score(["a prompt"])
        die("verify")
        return {"verification": {"note": note}}

    def replace_dir(new, target):
        die("before_swap")
        replace(new, target)
    def exchange_then(a, b):
        done = exchange(a, b)
        die("after_swap")
        return done
    if kill_at == "between_renames":  # the portable path: move the old bundle aside, then the new in
        atomic.exchange = lambda a, b: False
        real_replace = os.replace
        def replace_and_die(src, dst):
            real_replace(src, dst)
            if str(dst).endswith("/bundle"):
                die("between_renames")
        atomic.os.replace = replace_and_die
    replace, exchange = atomic.replace_dir, atomic.exchange
    atomic.replace_dir, atomic.exchange = replace_dir, exchange_then
    manifest = {k: v for k, v in rb.Bundle.load(source).manifest.items()
                if k not in ("format", "format_version", "files", "verification")}
    rb.write_bundle(target, {**manifest, "note": note}, write_files, verify=verify)
""")


def _write(source: Path, target: Path, note: str, kill_at: str = "never") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(source), str(target), note, kill_at],
                            cwd=REPO, env=ENV, stderr=subprocess.PIPE)


def _note(target: Path) -> str:
    return Bundle.load(target).manifest["note"]


def _write_here(source: Path, target: Path, note: str) -> None:
    """The same bundle write in this process, unkilled."""
    names = ("model.onnx", "tokenizer.json", "models.parquet")
    manifest = {k: v for k, v in Bundle.load(source).manifest.items()
                if k not in ("format", "format_version", "files", "verification")}

    def files(tmp: Path) -> dict[str, str]:
        for name in names:
            shutil.copy(source / name, tmp / name)
        return {name: name for name in names}

    write_bundle(target, {**manifest, "note": note}, files)


@pytest.fixture
def previous(tiny_bundle, tmp_path) -> Path:
    """A bundle directory holding a complete bundle noted 'old'."""
    _write_here(tiny_bundle, tmp_path / "bundle", "old")
    return tmp_path / "bundle"


def _assert_intact_then_recovers(tiny_bundle, target: Path, allowed: set[str]) -> None:
    assert _visible(target.parent) == ["bundle"]  # no half bundle under a visible name
    assert _note(target) in allowed
    _write_here(tiny_bundle, target, "next")  # the next write cleans up after the killed one
    assert _note(target) == "next" and sorted(os.listdir(target.parent)) == ["bundle"]


@pytest.mark.parametrize("step", ["files", "verify", "before_swap", "after_swap"])
def test_bundle_write_killed_at_each_step(tiny_bundle, previous, step):
    proc = _write(tiny_bundle, previous, "new", step)
    assert proc.wait(120) == -signal.SIGKILL
    leftovers = [p.name for p in previous.parent.iterdir() if p.name != "bundle"]
    assert leftovers and all(p.startswith(".bundle.tmp-") for p in leftovers)
    _assert_intact_then_recovers(tiny_bundle, previous, {"new"} if step == "after_swap" else {"old"})


def test_bundle_write_killed_between_the_portable_renames(tiny_bundle, previous):
    # Without renameat2 (not Linux) the old bundle is moved aside, then the new one in: a kill in
    # between leaves no bundle under the name; the previous one waits aside, whole, and the next
    # write puts it back first.
    proc = _write(tiny_bundle, previous, "new", "between_renames")
    assert proc.wait(120) == -signal.SIGKILL
    assert not previous.exists()
    from routerdb.atomic import clean_stale

    clean_stale(previous)
    assert _note(previous) == "old"
    _assert_intact_then_recovers(tiny_bundle, previous, {"old"})


def test_bundle_write_killed_at_random_moments(tiny_bundle, previous):
    rng = random.Random(SEED)
    start = time.monotonic()
    proc = _write(tiny_bundle, previous, "timed")
    assert proc.wait(120) == 0
    duration = time.monotonic() - start
    for _ in range(4):
        proc = _write(tiny_bundle, previous, "new")
        time.sleep(rng.uniform(0.0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        assert _visible(previous.parent) == ["bundle"]
        assert _note(previous) in {"timed", "new"}
    _assert_intact_then_recovers(tiny_bundle, previous, {"timed", "new"})


# ------------------------------------------------------------------ disk full, read-only


@pytest.mark.parametrize("stage", ["files", "manifest", "swap"])
def test_disk_full_while_writing_a_bundle(previous, tiny_bundle, monkeypatch, stage):
    import routerdb.atomic as atomic
    import routerdb.bundle as rb

    before = Bundle.load(previous).digest

    def files(tmp):
        if stage == "files":
            _enospc()
        for name in ("model.onnx", "tokenizer.json", "models.parquet"):
            shutil.copy(tiny_bundle / name, tmp / name)
        return {name: name for name in ("model.onnx", "tokenizer.json", "models.parquet")}

    if stage == "manifest":
        monkeypatch.setattr(rb, "_write_manifest", _enospc)
    if stage == "swap":
        monkeypatch.setattr(atomic, "exchange", _enospc)
    with pytest.raises(OSError, match=r"cannot write the bundle .*No space left on device.* previous bundle"):
        write_bundle(previous, {"note": "new"}, files)
    assert Bundle.load(previous).digest == before
    assert sorted(os.listdir(previous.parent)) == ["bundle"]  # no temporary directory left


def test_disk_full_during_a_real_export(tiny_router, tiny_bundle, tmp_path, monkeypatch):
    from training.export import export_bundle

    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, target)
    before = Bundle.load(target).digest
    monkeypatch.setattr(pq, "write_table", _enospc)
    with pytest.raises(OSError) as err:
        export_bundle(tiny_router, target, ["What is 2 + 2?"])
    assert err.value.errno == errno.ENOSPC and "previous bundle there is unchanged" in str(err.value)
    assert Bundle.load(target).digest == before and sorted(os.listdir(tmp_path)) == ["bundle"]


def test_read_only_directory_for_a_bundle(tmp_path, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(OSError, match=r"cannot write the bundle .*Permission denied.*Nothing was written"):
        write_bundle(tmp_path / "bundle", {}, lambda tmp: {})
    assert os.listdir(tmp_path) == []


def _spec(tmp_path: Path, encoder: Path) -> Path:
    data = tmp_path / "train.parquet"
    pq.write_table(tiny_models.synthetic_scores(12), data)
    return _fit_spec(tmp_path, encoder, data, "job")


@pytest.mark.timeout(300)
def test_disk_full_during_a_checkpoint_then_resume(tmp_path, tiny_encoders, monkeypatch, capsys):
    import training.trainer.checkpoint
    from training.fit import main as fit_main
    from training.trainer.checkpoint import find_checkpoint

    spec = _spec(tmp_path, tiny_encoders["bert"])
    real, calls = training.trainer.checkpoint.save_file, []

    def fail_second_epoch(*args, **kwargs):  # the state file of epoch 2 hits a full disk
        calls.append(1)
        if len(calls) == 2:
            _enospc()
        return real(*args, **kwargs)

    monkeypatch.setattr(training.trainer.checkpoint, "save_file", fail_second_epoch)
    assert fit_main([str(spec)]) == 1
    assert "error: [Errno 28] No space left on device" in capsys.readouterr().err
    run = tmp_path / "job" / "run"
    assert find_checkpoint(run)[2]["epoch"] == 1  # epoch 1 is whole
    assert not (run / ".checkpoint.tmp").exists() and not (tmp_path / "job" / "bundle").exists()
    monkeypatch.setattr(training.trainer.checkpoint, "save_file", real)
    assert fit_main([str(spec), "--resume"]) == 0
    assert find_checkpoint(run)[2]["epoch"] == 3 and Bundle.load(tmp_path / "job" / "bundle")


def test_read_only_output_fails_before_training(tmp_path, tiny_encoders, monkeypatch, capsys):
    import tempfile

    from training.fit import main as fit_main

    spec = _spec(tmp_path, tiny_encoders["bert"])

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    start = time.monotonic()
    assert fit_main([str(spec)]) == 1
    err = capsys.readouterr().err
    assert "output.run_dir" in err and "Read-only file system" in err and "Traceback" not in err
    assert time.monotonic() - start < 5  # refused before any data is read or model built


def test_read_only_output_for_rescore(tiny_bundle, tmp_path, monkeypatch, capsys):
    import tempfile

    source = tmp_path / "logs.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"]}), source)

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    args = ["rescore", str(tiny_bundle), str(source), str(tmp_path / "out.parquet"), "--no-progress"]
    assert cli_main(args) == 2
    assert "cannot be written: Read-only file system" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["logs.parquet"]  # refused before any part was written


def test_disk_full_while_rescoring_then_resume(tiny_bundle, tmp_path, monkeypatch, capsys):
    source = tmp_path / "logs.parquet"
    pq.write_table(pa.table({"prompt": [f"prompt {i}" for i in range(50)]}), source)
    out = tmp_path / "scored.parquet"
    args = ["rescore", str(tiny_bundle), str(source), str(out), "--no-progress", "--batch-rows", "10",
            "--part-rows", "20"]
    real, calls = pq.ParquetWriter.write_batch, []

    def fail_fourth(self, *a, **k):
        calls.append(1)
        if len(calls) == 4:  # inside the second part
            _enospc()
        return real(self, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", fail_fourth)
    assert cli_main(args) == 2
    assert "No space left on device" in capsys.readouterr().err
    parts = tmp_path / "scored.parquet.parts"
    assert not out.exists()
    assert sorted(p.name for p in parts.iterdir()) == ["part-000000.parquet", "state.json"]
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", real)
    assert cli_main(args) == 0  # resumes after the complete part
    table = pq.read_table(out)
    assert table["prompt"].to_pylist() == [f"prompt {i}" for i in range(50)] and not parts.exists()


def test_disk_full_when_a_part_file_is_created_leaves_no_empty_file(tiny_bundle, tmp_path, monkeypatch,
                                                                     capsys):
    source = tmp_path / "logs.parquet"
    pq.write_table(pa.table({"prompt": [f"prompt {i}" for i in range(50)]}), source)
    out = tmp_path / "scored.parquet"
    args = ["rescore", str(tiny_bundle), str(source), str(out), "--no-progress", "--batch-rows", "10",
            "--part-rows", "20"]
    real, opened = pq.ParquetWriter.__init__, []

    def full_on_the_second(self, where, *a, **k):
        opened.append(where)
        if len(opened) == 2:  # the second part: the file is created, then the disk is full
            Path(where).touch()
            _enospc()
        return real(self, where, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "__init__", full_on_the_second)
    assert cli_main(args) == 2
    assert "No space left on device" in capsys.readouterr().err
    parts = tmp_path / "scored.parquet.parts"
    assert sorted(p.name for p in parts.iterdir()) == ["part-000000.parquet", "state.json"]  # no .part-*.tmp
    monkeypatch.setattr(pq.ParquetWriter, "__init__", real)
    assert cli_main(args) == 0 and pq.read_table(out).num_rows == 50
