"""One file reader for training and `routerdb rescore` (issue 21, items 4 and 9): Parquet, CSV, TSV,
gzip, JSON Lines and the delimiter found from the file; CSV columns read exactly, as their text."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routerdb import table_file
from routerdb.log_input import open_input
from routerdb.rescore import RescoreError, parts_dir, rescore
from training.data import DataError, load_pairs

ROWS = [("Solve 3x + 5 = 20.", "x", "1"), ("Solve 3x + 5 = 20.", "y", "0"),
        ("Write a haiku; about rain", "x", "0"), ("Write a haiku; about rain", "y", "1")]


def _write(path, delimiter: str, rows=ROWS, header=("prompt", "model", "score")):
    def quoted(v):
        return f'"{v}"' if delimiter in v or '"' in v else v
    text = "\n".join(delimiter.join(quoted(v) for v in row) for row in [header, *rows]) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "delimiter"), [("s.csv", ","), ("s.tsv", "\t"), ("s.csv.gz", ","),
                                                  ("s.tsv.gz", "\t"), ("semi.csv", ";"), ("pipe.csv", "|")])
def test_training_and_rescore_read_every_text_format_alike(tmp_path, name, delimiter):
    path = _write(tmp_path / name, delimiter)
    pairs = load_pairs(path)  # training refused .tsv and .csv.gz; ';' gave "Expected 1 columns, got 2"
    assert pairs.num_rows == 2 and sorted(set(pairs["prompt"].to_pylist())) == sorted({r[0] for r in ROWS})
    streamed = pa.Table.from_batches(list(open_input(path, batch_rows=3).reader))
    assert streamed.equals(table_file.read_table(path))
    assert streamed.to_pylist() == [dict(zip(("prompt", "model", "score"), r, strict=True)) for r in ROWS]


def test_json_lines_and_parquet_too(tmp_path):
    table = pa.table({"prompt": [r[0] for r in ROWS], "model": [r[1] for r in ROWS],
                      "score": [float(r[2]) for r in ROWS]})
    pq.write_table(table, tmp_path / "s.parquet")
    with gzip.open(tmp_path / "s.jsonl.gz", "wt") as fh:
        fh.write("\n".join(__import__("json").dumps(r) for r in table.to_pylist()) + "\n")
    for name in ("s.parquet", "s.jsonl.gz"):
        assert load_pairs(tmp_path / name).num_rows == 2
        assert pa.Table.from_batches(list(open_input(tmp_path / name).reader)).equals(table)


def test_a_ragged_line_names_the_separator_it_was_read_with(tmp_path):
    path = _write(tmp_path / "semi.csv", ";", rows=[*ROWS, ("a;b", "x", "1", "extra")])
    with pytest.raises(DataError, match=r"cannot be parsed as csv \(read as semicolon-separated, 3 header "
                                        r"columns\) .*every row needs as many fields as the header"):
        load_pairs(path)


def test_rescore_reads_csv_columns_exactly_as_text(tiny_bundle, tmp_path):
    # DuckDB typed `code` from its first 20,480 rows as a number: the text row after them stopped the run
    n = 25_000
    codes = [str(i) for i in range(n - 2)] + ["007", "n/a"]
    path = tmp_path / "log.csv"
    path.write_text("prompt,code\n" + "".join(f"hi,{c}\n" for c in codes))
    got = pq.read_table(rescore(tiny_bundle, path, tmp_path / "out.parquet", progress=False))
    assert got.schema.field("code").type == pa.string() and got["code"].to_pylist() == codes  # "007" kept


def test_rescore_stops_on_a_malformed_csv_line_before_scoring_anything(tiny_bundle, tmp_path, monkeypatch):
    import routerdb.rescore as rs

    path = tmp_path / "log.csv"
    path.write_text("prompt,n\n" + "hi,1\n" * 30_000 + "hi,2,3\n")
    scored = []
    monkeypatch.setattr(rs, "score_batch", lambda *a, **k: scored.append(1))
    out = tmp_path / "out.parquet"
    with pytest.raises(RescoreError, match=r"log.csv' cannot be read as csv \(.*\); nothing was scored"):
        rescore(tiny_bundle, path, out, progress=False)
    assert scored == [] and not out.exists() and not parts_dir(out).exists()
