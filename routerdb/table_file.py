"""One reader for tabular files, shared by training (`training.data.read`) and `routerdb rescore`.

    Parquet      .parquet .pq                        pyarrow, the file's own Arrow types
    CSV / TSV    .csv .tsv, also gzipped (.csv.gz)   every column as text, exactly as written
    JSON Lines   .jsonl .ndjson .json, also gzipped  one JSON object per line, pyarrow's types

CSV has no types, and guessing them from the first rows is how a column that is numeric early and
text later stopped a run a million rows in: every column is read as the text it holds (a
consumer casts what it needs, e.g. training's `score`). An unquoted empty field is NULL, a quoted
one (`""`) the empty string, as the same row would be in Parquet; no other text means NULL. The
delimiter is found from the file's start (comma, tab, semicolon or pipe; `.tsv` is tab).

`check_stream` reads a file once through before its rows are used, so a malformed line (a row
with a field too many) stops a run before any work, naming the problem, not after a million rows.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

PARQUET = (".parquet", ".pq")
CSV = (".csv", ".tsv")
JSON_LINES = (".jsonl", ".ndjson", ".json")
SUFFIXES = (PARQUET[0], *CSV, *JSON_LINES, PARQUET[1])  # CSV and JSON_LINES also with .gz after them
DELIMITERS = ",\t;|"
SNIFF_BYTES = 1 << 16  # the start of a CSV file read to find its delimiter and header
BLOCK_BYTES = 1 << 24  # pyarrow's CSV / JSON block: a prompt may be long


class TableFileError(ValueError):
    """A file that cannot be read as the table its name says; the message says what and the fix."""


def kind(path: str | os.PathLike[str]) -> str | None:
    """'parquet', 'csv' or 'json' by the file name (a trailing .gz allowed for the text formats)."""
    name = Path(path).name.lower()
    if name.endswith(PARQUET):
        return "parquet"
    plain = name.removesuffix(".gz")
    if plain.endswith(CSV):
        return "csv"
    if plain.endswith(JSON_LINES):
        return "json"
    return None


def described_suffixes() -> str:
    return ", ".join(SUFFIXES) + " (CSV, TSV and JSON Lines also gzipped, e.g. .csv.gz)"


@dataclass(frozen=True)
class CsvDialect:
    delimiter: str
    columns: tuple[str, ...]


def csv_dialect(path: Path) -> CsvDialect:
    """The delimiter and header of a CSV / TSV file, from its first SNIFF_BYTES."""
    try:
        with _open_text(path) as fh:
            sample = fh.read(SNIFF_BYTES)
    except (gzip.BadGzipFile, EOFError) as exc:
        raise TableFileError(f"{path}: not a gzip file, or a truncated one ({exc}); name it without .gz if "
                             "it is not compressed") from None
    if not sample.strip():
        raise TableFileError(f"{path}: an empty file; a CSV file starts with a header row of column names")
    header = next(line for line in sample.splitlines() if line.strip())  # blank lines are skipped
    if Path(path).name.lower().removesuffix(".gz").endswith(".tsv"):
        delimiter = "\t"
    else:  # the candidate found most often in the header (a header names columns: no commas in them)
        counts = {d: header.count(d) for d in DELIMITERS}
        delimiter = max(counts, key=lambda d: (counts[d], d == ","))
    try:
        names = next(csv.reader(io.StringIO(header), delimiter=delimiter), [])
    except csv.Error as exc:
        raise TableFileError(f"{path}: its header row cannot be read ({exc})") from None
    return CsvDialect(delimiter, tuple(names))


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _csv_options(dialect: CsvDialect) -> tuple:
    read = pacsv.ReadOptions(block_size=BLOCK_BYTES)
    parse = pacsv.ParseOptions(delimiter=dialect.delimiter, newlines_in_values=True)
    convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in dialect.columns},
                                   strings_can_be_null=True, quoted_strings_can_be_null=False,
                                   check_utf8=False,  # a bad byte is reported by row, by the reader's user
                                   null_values=[""])
    return read, parse, convert


def columns(path: str | os.PathLike[str]) -> list[str]:
    """The file's column names, from its header alone (Parquet metadata, the CSV header row, the
    first JSON line)."""
    path = Path(path)
    found = kind(path)
    if found == "parquet":
        return pq.read_schema(path).names
    if found == "csv":
        return list(csv_dialect(path).columns)
    with _open_text(path) as fh:
        first = next((line for line in fh if line.strip()), "{}")
    row = json.loads(first)
    if not isinstance(row, dict):
        raise TableFileError(f"{path}: the first line is a JSON {type(row).__name__}, not an object; "
                             "JSON Lines hold one object per line")
    return list(row)


def read_table(path: str | os.PathLike[str]) -> pa.Table:
    """The whole file as one table (pyarrow errors pass through: the caller words them)."""
    path = Path(path)
    found = kind(path)
    if found == "parquet":
        return pq.read_table(path)
    if found == "csv":
        read, parse, convert = _csv_options(csv_dialect(path))
        return pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    return pajson.read_json(path, read_options=pajson.ReadOptions(block_size=BLOCK_BYTES))


@dataclass
class TableStream:
    """A file's rows as a stream of record batches, its row count and Parquet row groups if known."""

    reader: pa.RecordBatchReader
    rows: int | None
    row_groups: list[int] | None = None


def open_stream(path: str | os.PathLike[str], batch_rows: int) -> TableStream:
    """The file's rows in order as a stream (bounded memory whatever the file's size)."""
    path = Path(path)
    found = kind(path)
    if found == "parquet":
        source = pq.ParquetFile(path)  # pyarrow keeps the file's exact Arrow types
        batches = source.iter_batches(batch_size=batch_rows)
        groups = [source.metadata.row_group(i).num_rows for i in range(source.metadata.num_row_groups)]
        return TableStream(pa.RecordBatchReader.from_batches(source.schema_arrow, batches),
                           source.metadata.num_rows, groups)
    reader = _text_reader(path, found)
    return TableStream(pa.RecordBatchReader.from_batches(reader.schema, _rechunk(reader, batch_rows)), None)


def check_stream(path: str | os.PathLike[str]) -> int:
    """Read a CSV or JSON Lines file once through and return its rows: a malformed line stops here,
    before the rows are used (pyarrow errors pass through)."""
    return sum(batch.num_rows for batch in _text_reader(Path(path), kind(path)))


def _text_reader(path: Path, found: str | None):
    if found == "csv":
        read, parse, convert = _csv_options(csv_dialect(path))
        return pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    return pajson.open_json(path, read_options=pajson.ReadOptions(block_size=BLOCK_BYTES))


def _rechunk(reader, rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of at most `rows` rows (pyarrow's text readers yield a block's worth at a time)."""
    for batch in reader:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)
