"""A prompt log read as a stream of Arrow record batches, in file order: a file or a DuckDB table.

Files are read by `routerdb.table_file`, the reader training uses too: Parquet with its exact Arrow
types; CSV / TSV (also gzipped, any common delimiter) with every column as the text it holds (no
type guessed from the first rows: a column numeric early and text later stopped runs a million rows
in); JSON Lines. A CSV or JSON Lines file is read through once before any row is scored, so a
malformed line stops the run at once. DuckDB tables come through DuckDB with their own types.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from routerdb import table_file

BATCH_ROWS = 8_192  # rows read and scored at a time
DUCKDB_SUFFIXES = (".duckdb", ".db", ".ddb")
_LOCK_HOLDER = re.compile(r"(?:Conflicting lock is held in|lock held by)\s*(.*?)(?:\.\s|$)", re.S)


class RescoreError(ValueError):
    """The input, the options or a previous run's parts do not fit together."""


@dataclass
class LogInput:
    """An open prompt log: its batches, its row count where cheap to know, and where rows are."""

    path: Path
    reader: pa.RecordBatchReader
    rows: int | None
    row_groups: list[int] | None = None  # rows per Parquet row group, to say where a row is

    def where(self, row: int) -> str:
        """'row N' of the file, with its Parquet row group and the row within it."""
        if not self.row_groups:
            return f"row {row}"
        start = 0
        for group, size in enumerate(self.row_groups):
            if row < start + size:
                return f"row {row} (row group {group}, row {row - start} within it)"
            start += size
        return f"row {row}"


def open_input(path: str | os.PathLike[str], table: str | None = None,
               batch_rows: int = BATCH_ROWS) -> LogInput:
    """The input's rows in order, as a stream."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no input file {str(path)!r}; pass a Parquet, CSV, JSON Lines or DuckDB "
                                "file.")
    suffix = path.suffix.lower()
    if table is not None or suffix in DUCKDB_SUFFIXES:
        return _duckdb_table(path, table, batch_rows)
    found = table_file.kind(path)
    if found is None:
        raise RescoreError(f"input {str(path)!r} has suffix {suffix!r}; rescore reads "
                           f"{table_file.described_suffixes()}, or a DuckDB database (.duckdb/.db, with "
                           "--table NAME).")
    try:
        rows = None if found == "parquet" else table_file.check_stream(path)  # malformed: stop now
        stream = table_file.open_stream(path, batch_rows)
    except (pa.ArrowException, OSError, table_file.TableFileError) as exc:
        raise RescoreError(f"input {str(path)!r} cannot be read as {found} ({_first_line(exc)}); nothing "
                           "was scored. Fix the file (every CSV row as many fields as the header, a field "
                           "holding the separator quoted), or pass Parquet.") from None
    return LogInput(path, stream.reader, stream.rows if rows is None else rows, stream.row_groups)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def skip_rows(reader: pa.RecordBatchReader, skip: int) -> Iterator[pa.RecordBatch]:
    """The batches of `reader` without their first `skip` rows."""
    for batch in reader:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        yield batch.slice(skip) if skip else batch
        skip = 0


def _reader_connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # One thread reads in file order and keeps DuckDB's buffers small; the encoder is the cost.
    con.execute("SET threads TO 1")
    con.execute("SET preserve_insertion_order = true")
    return con


def _duckdb_table(path: Path, table: str | None, batch_rows: int) -> LogInput:
    if not table:
        raise RescoreError(f"{str(path)!r} is a DuckDB database: name the table with --table NAME.")
    con = _reader_connection()
    try:
        con.execute("ATTACH ? AS source (READ_ONLY)", [str(path)])
    except duckdb.Error as exc:
        raise RescoreError(_attach_problem(path, exc)) from None
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'source' "
        "UNION ALL SELECT view_name FROM duckdb_views() WHERE database_name = 'source'").fetchall()]
    if table not in tables:
        raise RescoreError(f"no table {table!r} in {str(path)!r}; it has {sorted(tables)}. "
                           "Pass one of these with --table.")
    name = 'source."' + table.replace('"', '""') + '"'
    try:
        count = con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        reader = con.sql(f"SELECT * FROM {name}").fetch_record_batch(batch_rows)
    except duckdb.Error as exc:
        raise RescoreError(f"cannot read {table!r} from {str(path)!r}: {exc}") from exc
    return LogInput(path, _keep_open(reader, con), int(count))


def _attach_problem(path: Path, exc: duckdb.Error) -> str:
    """Why a DuckDB file cannot be opened: locked by a process (named if DuckDB says), or not DuckDB."""
    text = str(exc)
    if "lock" in text.lower():
        holder = _LOCK_HOLDER.search(text)
        who = f" ({holder.group(1).strip()})" if holder else ""
        return (f"{str(path)!r} is locked by another process{who}, which has it open for writing; DuckDB "
                "lets no other process read it meanwhile. Wait for that process to finish or close the "
                f"database, or rescore a copy of the file. DuckDB said: {text.splitlines()[0]}")
    return (f"cannot open {str(path)!r} as a DuckDB database ({text}); --table is only for DuckDB "
            "database files. Drop --table to read Parquet or CSV.")


def _keep_open(reader: pa.RecordBatchReader, con: duckdb.DuckDBPyConnection) -> pa.RecordBatchReader:
    """A reader that holds on to its DuckDB connection until the stream ends."""
    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            con.close()
    return pa.RecordBatchReader.from_batches(reader.schema, batches())
