"""`training.fit --validate-only` checks all that can be checked without training, and a run
checks the same before it writes anything."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.paths import SAMPLE
from training.fit import main as fit_main


def _spec(tmp_path: Path, encoder: Path, **changes) -> Path:
    raw = {"data": {"train": [str(SAMPLE)], "validation": {"fraction": 0.2, "seed": 0}},
           "output": {"run_dir": str(tmp_path / "run"), "bundle_dir": str(tmp_path / "bundle")},
           "encoder": {"name": str(encoder)}, "epochs": 1, "progress": False}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section] = {**raw.get(section, {}), field: value}
        else:
            raw[section] = value
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(raw))
    return path


def _errors(capsys, argv: list[str]) -> str:
    assert fit_main(argv) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--validate-only"], []])
def test_missing_and_wrong_inputs_are_all_reported_before_anything_is_written(tiny_encoders, tmp_path,
                                                                              capsys, flag):
    (tmp_path / "somedir").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    bad_columns = tmp_path / "bad.csv"
    bad_columns.write_text("question,answer\nhi,there\n")
    spec = _spec(tmp_path, tmp_path / "no-encoder",
                 data__train=[str(tmp_path / "missing.parquet"), str(tmp_path / "somedir"),
                              str(tmp_path / "notes.txt"), str(bad_columns)])
    err = _errors(capsys, [str(spec), *flag])
    assert "5 problem(s) found before training" in err
    assert "data.train[0]:" in err and "missing.parquet: no such file" in err
    assert "data.train[1]:" in err and "a directory, not a data file" in err
    assert "data.train[2]:" in err and "file suffix '.txt'" in err
    assert "data.train[3]:" in err and "columns ['answer', 'question']" in err
    assert "encoder.name: encoder directory" in err and "does not exist" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "bundle").exists()


def test_outputs_that_are_someone_elses_are_refused(tiny_encoders, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_text("meow")
    (tmp_path / "report.pdf").write_text("%PDF")
    spec = _spec(tmp_path, tiny_encoders["bert"], output={"run_dir": str(tmp_path / "photos"),
                                                           "bundle_dir": str(tmp_path / "report.pdf")})
    err = _errors(capsys, [str(spec), "--validate-only"])
    assert "output.run_dir" in err and "not a routerdb run" in err
    assert "output.bundle_dir" in err and "is not a directory" in err
    assert (tmp_path / "photos" / "cat.jpg").read_text() == "meow"
    spec = _spec(tmp_path, tiny_encoders["bert"], output={"run_dir": str(tmp_path / "run"),
                                                           "bundle_dir": str(tmp_path / "photos")})
    err = _errors(capsys, [str(spec), "--validate-only"])
    assert "a non-empty directory that is not a routerdb bundle" in err


def test_an_output_below_a_file_cannot_be_written(tiny_encoders, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    spec = _spec(tmp_path, tiny_encoders["bert"], output={"run_dir": str(tmp_path / "file" / "run"),
                                                           "bundle_dir": str(tmp_path / "b")})
    err = _errors(capsys, [str(spec), "--validate-only"])
    assert "output.run_dir" in err and "is a file, not a directory" in err


def test_a_hub_encoder_offline_without_a_cached_copy_is_reported(tiny_encoders, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = _spec(tmp_path, Path("nobody/no-such-encoder"))
    err = _errors(capsys, [str(spec), "--validate-only"])
    assert "encoder.name: 'nobody/no-such-encoder' is not a local directory" in err
    assert "HF_HUB_OFFLINE is set with no cached copy" in err


def test_a_valid_spec_passes_and_a_previous_run_directory_is_reused(tiny_encoders, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "p", "model_a": "x", "model_b": "y", "winner": "model_a"}) + "\n")
    pq.write_table(pa.table({"prompt": ["p", "p"], "model": ["x", "y"], "score": [1.0, 0.0]}),
                   tmp_path / "s.parquet")  # every row is read: two LLMs scored on the prompt
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "spec.json").write_text("{}")  # an earlier run of this spec
    spec = _spec(tmp_path, tiny_encoders["bert"], data__train=[str(data), str(tmp_path / "s.parquet")])
    assert fit_main([str(spec), "--validate-only"]) == 0
    assert ": valid (lora fine-tuning" in capsys.readouterr().out


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", True, "epochs: Input should be a valid integer (got True)"),
    ("epochs", 1e9, "epochs: Input should be a valid integer (got 1000000000.0)"),
    ("epochs", 1_000_000, "epochs: Input should be less than or equal to 10000"),
    ("batch_size", 10**12, "batch_size: Input should be less than or equal to 1048576"),
    ("loss", {"margin": True},
     "loss.margin_ranking.margin: Value error, got true, a boolean, where a number is expected"),
    ("head", {"hidden_dims": [True]}, "head.mlp.hidden_dims.0: Input should be a valid integer"),
])
def test_numbers_are_strict_and_bounded(tiny_encoders, tmp_path, capsys, field, value, message):
    spec = _spec(tmp_path, tiny_encoders["bert"], **{field: value})
    assert message in _errors(capsys, [str(spec), "--validate-only"])


def _scores_with_a_nan(tmp_path: Path) -> Path:
    rows = [{"prompt": f"prompt {i}", "model": m, "score": float(i % 2)} for i in range(400) for m in "xyz"]
    rows[1000]["score"] = float("nan")
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)
    return path


def test_validate_only_reads_every_row(tiny_encoders, tmp_path, capsys):
    spec = _spec(tmp_path, tiny_encoders["bert"], data__train=[str(_scores_with_a_nan(tmp_path))])
    err = _errors(capsys, [str(spec), "--validate-only"])  # it said "valid": only the header was read
    assert "1 problem(s) found before training" in err
    assert "data.train[0]:" in err and "row 1000, column 'score': received score nan" in err
    assert not (tmp_path / "run").exists()


def test_validate_only_checks_llm_names_across_files(tiny_encoders, tmp_path, capsys):
    for name, llm in (("a.parquet", "gpt-4"), ("b.parquet", "GPT-4")):
        pq.write_table(pa.table({"prompt": ["p", "p"], "model": [llm, "other"], "score": [1.0, 0.0]}),
                       tmp_path / name)
    spec = _spec(tmp_path, tiny_encoders["bert"], data__train=[str(tmp_path / "a.parquet"),
                                                               str(tmp_path / "b.parquet")])
    err = _errors(capsys, [str(spec), "--validate-only"])
    assert "data.train: <2 tables>: received LLM names 'GPT-4', 'gpt-4' that differ only" in err


def test_a_run_rejects_bad_rows_before_writing_and_says_so_once(tiny_encoders, tmp_path, capsys):
    spec = _spec(tmp_path, tiny_encoders["bert"], data__train=[str(_scores_with_a_nan(tmp_path))])
    assert fit_main([str(spec)]) == 2  # bad input
    err = capsys.readouterr().err
    assert err.count("received score nan") == 1, err
    assert not (tmp_path / "run" / "spec.json").exists()
    assert "received score nan" in (tmp_path / "run" / "train.log").read_text()
