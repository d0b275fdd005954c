"""The training command line: `routerdb-train VERB` (= `python -m training VERB`), the older
`python -m training.fit` and the like running the same code, one exit-code convention (0 done,
2 bad input, 1 the work failed) and each error shown once."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from routerdb.bundle import BundleError
from routerdb.router import UnknownModelError
from tests.paths import REPO
from training import add_model, cli, command, evaluate, export, fit
from training.data import DataError
from training.specs import SpecError
from training.verification import ExportError


def _toy(raise_: BaseException | None, log_file=None) -> command.Command:
    def run(args: argparse.Namespace) -> int:
        if log_file is not None:
            command.log_to_file(log_file)
        logging.getLogger("training.toy").info("working")
        if raise_ is not None:
            raise raise_
        return command.OK

    return command.Command("toy", "a toy command", lambda parser: None, run)


@pytest.mark.parametrize("exc, code", [
    (SpecError("spec.json: 2 problem(s)"), 2), (DataError("row 0: bad"), 2), (BundleError("no bundle"), 2),
    (UnknownModelError(["x"], ["a"]), 2), (ValueError("bad"), 2), (FileNotFoundError("missing.parquet"), 2),
    (OSError(errno.ENOSPC, "No space left on device"), 1), (PermissionError(errno.EACCES, "denied"), 1),
    (ExportError("ONNX differs"), 1), (MemoryError("out of memory"), 1), (RuntimeError("torch"), None),
    (TypeError("a bug"), None), (AttributeError("a bug"), None),
])
def test_exit_code_convention(exc, code):
    assert command.exit_code(exc) == code


@pytest.mark.parametrize("exc, code", [(SpecError("the spec is wrong"), 2),
                                       (OSError(errno.ENOSPC, "No space left on device"), 1),
                                       (KeyError("no comparison records of LLM 'x'"), 2)])
def test_an_error_is_printed_once_and_logged_to_the_run(exc, code, tmp_path, capsys):
    handlers = list(logging.getLogger().handlers)
    log_file = tmp_path / "run" / "train.log"
    assert command.run(_toy(exc, log_file), argparse.Namespace()) == code
    err = capsys.readouterr().err
    text = command.message(exc)
    assert err.count(text) == 1 and f"error: {text}\n" in err and "Traceback" not in err, err
    assert "training.toy: working" in err  # progress lines keep time and logger
    assert f"ERROR training.command: {text}" in log_file.read_text()
    assert logging.getLogger().handlers == handlers  # the command's handlers are gone again


def test_the_message_is_the_errors_own_words():
    assert command.message(KeyError("no comparison records of LLM 'x'")) == "no comparison records of LLM 'x'"
    assert command.message(UnknownModelError(["x"], ["a"])).startswith("unknown LLM 'x'; this router knows 1")
    assert command.message(OSError(errno.ENOSPC, "No space left")) == "[Errno 28] No space left"


def test_a_bug_keeps_its_traceback(capsys):
    with pytest.raises(TypeError, match="a bug"):
        command.run(_toy(TypeError("a bug")), argparse.Namespace())
    assert "error:" not in capsys.readouterr().err


def test_the_verbs_are_the_commands():
    verbs = cli.parser()._subparsers._group_actions[0].choices  # argparse's subcommand table
    assert list(verbs) == ["fit", "evaluate", "export", "add-model"]
    assert [c.name for c in cli.COMMANDS] == list(verbs)
    modules = (fit, evaluate, export, add_model)
    assert [c.run.__module__ for c in cli.COMMANDS] == [m.__name__ for m in modules]


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["train"], ["fit"], ["export", "a", "b"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2, argv
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_fit_validates_through_both_entry_points(tmp_path, capsys):
    demo = str(REPO / "examples/specs/demo.json")
    assert cli.main(["fit", demo, "--validate-only"]) == 0
    assert fit.main([demo, "--validate-only"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"{demo}: valid (lora fine-tuning") == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads((REPO / "examples/specs/demo.json").read_text()), "epochs": "x"}))
    for main in (lambda a: cli.main(["fit", *a]), fit.main):
        assert main([str(bad), "--validate-only"]) == 2
        err = capsys.readouterr().err
        assert err.count("error: ") == 1
        assert "1 problem(s):\n  - epochs: Input should be a valid integer" in err


def test_evaluate_bad_split_is_bad_input(tmp_path, capsys):
    argv = ["bundle", str(tmp_path / "data.parquet"), "--split", "0.2", "--out", str(tmp_path / "r")]
    assert cli.main(["evaluate", *argv]) == 2
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("FRACTION:SEED") == 2 and not (tmp_path / "r").exists()


def test_export_bad_prompts_file_is_bad_input(tiny_bundle, tmp_path, capsys):
    argv = [str(tiny_bundle), str(tmp_path / "int8"), "--quantize", "int8", "--prompts",
            str(tmp_path / "none.parquet")]
    assert cli.main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert "error: --prompts" in err and "none.parquet" in err and "Pass a Parquet or CSV file" in err
    assert not (tmp_path / "int8").exists()


def test_export_that_does_not_verify_is_a_failure(tiny_bundle, sample_path, tmp_path, monkeypatch, capsys):
    def differs(*args, **kwargs):
        raise ExportError("int8 scores differ from the full-precision bundle's by up to 0.9")

    monkeypatch.setattr(export, "quantize_bundle", differs)
    argv = [str(tiny_bundle), str(tmp_path / "int8"), "--quantize", "int8", "--prompts", str(sample_path)]
    assert cli.main(["export", *argv]) == 1
    assert export.main(argv) == 1
    assert capsys.readouterr().err.count("error: int8 scores differ") == 2


def test_add_model_source_that_is_no_router_is_bad_input(tmp_path, capsys):
    argv = [str(tmp_path), str(tmp_path / "records.parquet"), "--name", "new", "--out", str(tmp_path / "o")]
    assert cli.main(["add-model", *argv]) == 2
    assert add_model.main(argv) == 2
    assert capsys.readouterr().err.count("is neither a bundle (manifest.json) nor a run directory") == 2


def test_python_dash_m_training_and_the_old_module_path(tmp_path):
    """The real processes: `python -m training fit` and `python -m training.fit`, exit 2, one line."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    missing = str(tmp_path / "nope.json")
    for argv in (["-m", "training", "fit", missing], ["-m", "training.fit", missing]):
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)
        assert done.returncode == 2, (argv, done.stderr[-2000:])
        assert done.stderr.strip().splitlines()[-1].startswith(f"error: cannot read spec {missing!r}")
        assert done.stderr.count("error:") == 1, done.stderr


def test_console_script_points_at_the_cli():
    entry = re.search(r'^routerdb-train = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    module, _, name = entry.group(1).partition(":")
    assert (module, name) == ("training.cli", "main") and callable(getattr(cli, name))
