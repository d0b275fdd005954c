"""Batch rescoring: every row of a prompt log gets the best LLM and every LLM's score.

    routerdb rescore BUNDLE logs.parquet scored.parquet [--prompt-column prompt] [--models a,b]

The input is Parquet, CSV, or a table of a DuckDB database (`logs.duckdb --table logs`). The output
is Parquet holding exactly the input rows, in order, with every input column, plus
`route_best` (VARCHAR, the best LLM's name) and `route_scores` (MAP(VARCHAR, DOUBLE), each LLM's
score). A NULL prompt gets NULL in both.

Memory stays bounded whatever the log's size: the input is read as a stream of Arrow record
batches, each batch is scored (`score_batch`, also used by `routerdb.spark`) and written out at
once. Output goes to numbered part files in `OUTPUT.parts/`, each written under a temporary name
and renamed when complete; a run that is killed and started again skips the rows of the complete
parts, so no row is lost or written twice. When every row is scored the parts are concatenated
into OUTPUT (again through a temporary file and a rename) and the parts are removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from routerdb import atomic
from routerdb.routers import shared_router
from routerdb.score_map import SCORES_TYPE, score_map
from routerdb.scorer import Router

log = logging.getLogger(__name__)

ADDED = ("route_best", "route_scores")
BATCH_ROWS = 8_192  # rows read and scored at a time
PART_ROWS = 100_000  # rows per part file: the most a killed run has to redo
DUCKDB_SUFFIXES = (".duckdb", ".db", ".ddb")
_PART = re.compile(r"part-(\d{6})\.parquet")


class RescoreError(ValueError):
    """The input, the options or a previous run's parts do not fit together."""


# --- scoring one Arrow batch (shared with routerdb.spark) --------------------------------------


def output_schema(schema: pa.Schema) -> pa.Schema:
    """The input schema plus `route_best` and `route_scores`."""
    clash = [name for name in ADDED if name in schema.names]
    if clash:
        raise RescoreError(f"the input already has column(s) {clash}; rescoring adds {list(ADDED)}. "
                           "Rename or drop those columns first (e.g. SELECT * EXCLUDE (...)).")
    return schema.append(pa.field("route_best", pa.string())).append(pa.field("route_scores", SCORES_TYPE))


def check_prompt_column(schema: pa.Schema, prompt_column: str) -> None:
    if prompt_column not in schema.names:
        raise RescoreError(f"no column {prompt_column!r} in the input; its columns are {schema.names}. "
                           "Name the prompt column with --prompt-column.")
    kind = schema.field(prompt_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise RescoreError(f"column {prompt_column!r} is {kind}, not text; pass the column that holds "
                           "the prompt text with --prompt-column.")


def score_batch(router: Router, batch: pa.RecordBatch, prompt_column: str = "prompt",
                models: Sequence[str] | None = None) -> pa.RecordBatch:
    """`batch` with `route_best` and `route_scores` appended (over `models`, default: all)."""
    names = list(models) if models else list(router.models)
    cols = router.model_columns(names)
    prompts = batch.column(prompt_column).to_pylist()
    valid = np.fromiter((p is not None for p in prompts), dtype=bool, count=len(prompts))
    scores = np.zeros((len(prompts), len(names)), dtype=np.float64)
    if valid.any():
        scores[valid] = router.score_all([p for p in prompts if p is not None])[:, cols]
    best = np.asarray(names, dtype=object)[scores.argmax(axis=1)] if names else np.full(len(prompts), None)
    best_array = pa.array(best, type=pa.string(), mask=~valid)
    schema = output_schema(batch.schema)
    return pa.RecordBatch.from_arrays([*batch.columns, best_array, score_map(names, scores, ~valid)],
                                      schema=schema)


# --- reading the input as a stream --------------------------------------------------------------


def open_input(path: str | os.PathLike[str], table: str | None = None,
               batch_rows: int = BATCH_ROWS) -> tuple[pa.RecordBatchReader, int | None]:
    """A stream of the input's rows in order, and the row count where it is cheap to know."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no input file {str(path)!r}; pass a Parquet, CSV or DuckDB file.")
    suffix = path.suffix.lower()
    if table is not None or suffix in DUCKDB_SUFFIXES:
        return _duckdb_table(path, table, batch_rows)
    if suffix == ".parquet" or suffix == ".pq":
        try:
            source = pq.ParquetFile(path)  # pyarrow keeps the file's exact Arrow types
        except (pa.ArrowException, OSError) as exc:
            raise RescoreError(f"input {str(path)!r} cannot be read as Parquet ({exc}); pass a Parquet, "
                               "CSV or DuckDB file.") from None
        batches = source.iter_batches(batch_size=batch_rows)
        return pa.RecordBatchReader.from_batches(source.schema_arrow, batches), source.metadata.num_rows
    if suffix in (".csv", ".tsv") or path.name.lower().endswith((".csv.gz", ".tsv.gz")):
        con = _reader_connection()
        relation = con.sql("SELECT * FROM read_csv(?)", params=[str(path)])
        return _keep_open(relation.fetch_record_batch(batch_rows), con), None
    raise RescoreError(f"input {str(path)!r} has suffix {suffix!r}; rescore reads .parquet, .csv/.tsv, "
                       "or a DuckDB database (.duckdb/.db, with --table NAME).")


def _reader_connection():
    import duckdb

    con = duckdb.connect()
    # One thread reads in file order and keeps DuckDB's buffers small; the encoder is the cost.
    con.execute("SET threads TO 1")
    con.execute("SET preserve_insertion_order = true")
    return con


def _duckdb_table(path: Path, table: str | None, batch_rows: int):
    import duckdb

    if not table:
        raise RescoreError(f"{str(path)!r} is a DuckDB database: name the table with --table NAME.")
    con = _reader_connection()
    try:
        con.execute("ATTACH ? AS source (READ_ONLY)", [str(path)])
    except duckdb.Error as exc:
        raise RescoreError(f"cannot open {str(path)!r} as a DuckDB database ({exc}); --table is only "
                           "for DuckDB database files. Drop --table to read Parquet or CSV.") from exc
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
    return _keep_open(reader, con), int(count)


def _keep_open(reader: pa.RecordBatchReader, con) -> pa.RecordBatchReader:
    """A reader that holds on to its DuckDB connection until the stream ends."""
    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            con.close()
    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _skip_rows(reader: pa.RecordBatchReader, skip: int) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        yield batch.slice(skip) if skip else batch
        skip = 0


# --- parts, resuming, and the final file --------------------------------------------------------


def check_output(input_path: Path, output: Path) -> None:
    """Refuse, before any work, an output that is a directory, is the input, or cannot be written."""
    if output.is_dir():
        raise RescoreError(f"output {str(output)!r} is a directory; pass the path of the Parquet file to "
                           "write (e.g. scored.parquet).")
    if output.exists() and input_path.exists() and output.resolve() == input_path.resolve():
        raise RescoreError(f"output {str(output)!r} is the same file as the input; rescoring would "
                           "overwrite the input. Write to another file.")
    try:
        atomic.check_writable(output.parent)
    except OSError as exc:
        raise RescoreError(f"output {str(output)!r} cannot be written: {atomic.os_reason(exc)}. Choose a "
                           "path in a writable directory.") from None


def parts_dir(output: str | os.PathLike[str]) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".parts")


def _fingerprint(input_path: Path, table: str | None, prompt_column: str, models: list[str],
                 router: Router) -> dict:
    stat = input_path.stat()
    return {"input": str(input_path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "table": table, "prompt_column": prompt_column, "models": models,
            "bundle_digest": router.bundle.digest}


def _complete_parts(directory: Path, fingerprint: dict) -> list[Path]:
    """The complete parts of an earlier run of the same job (stray temporary files removed)."""
    state = directory / "state.json"
    if state.is_file():
        previous = json.loads(state.read_text())
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise RescoreError(f"{directory} holds parts of a different rescoring job ({', '.join(changed)} "
                               "changed since). Delete that directory to start over, or rerun the "
                               "original command to finish it.")
    else:
        directory.mkdir(parents=True, exist_ok=True)
        atomic.atomic_write_text(state, json.dumps(fingerprint, indent=2))
    for stray in directory.glob(".*.tmp*"):
        stray.unlink()  # a part that a killed run was writing
    parts = sorted(p for p in directory.iterdir() if _PART.fullmatch(p.name))
    expected = [f"part-{i:06d}.parquet" for i in range(len(parts))]
    if [p.name for p in parts] != expected:
        raise RescoreError(f"{directory} has parts {[p.name for p in parts]}, expected consecutive "
                           f"numbers {expected}; delete the directory to start over.")
    return parts


class _PartWriter:
    """Writes scored batches into part files of `part_rows` rows, each renamed when complete."""

    def __init__(self, directory: Path, schema: pa.Schema, first_index: int, part_rows: int):
        self.directory, self.schema, self.index, self.part_rows = directory, schema, first_index, part_rows
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            if self._writer is None:
                self._tmp = self.directory / f".part-{self.index:06d}.tmp"
                self._writer = pq.ParquetWriter(self._tmp, self.schema)
            take = min(batch.num_rows, self.part_rows - self._rows)
            self._writer.write_batch(batch.slice(0, take))
            self._rows += take
            batch = batch.slice(take)
            if self._rows == self.part_rows:
                self.close()

    def abort(self) -> None:
        """Drop the part being written (after an error: disk full, an interrupt)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # the error that got us here may break closing too
                pass
            self._tmp.unlink(missing_ok=True)
            self._writer = None

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self._tmp, self.directory / f"part-{self.index:06d}.parquet")
        self._writer, self._rows, self.index = None, 0, self.index + 1


def _concatenate(parts: list[Path], schema: pa.Schema, output: Path, batch_rows: int) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.tmp-", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_rows):
                    writer.write_batch(batch)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rescore(bundle, input_path: str | os.PathLike[str], output: str | os.PathLike[str], *,
            prompt_column: str = "prompt", models: Sequence[str] | None = None, table: str | None = None,
            batch_rows: int = BATCH_ROWS, part_rows: int = PART_ROWS, progress: bool = True) -> Path:
    """Rescore a prompt log into `output` (Parquet); resumes an interrupted run of the same job.

    `bundle` is a bundle path or a `Router`. Returns the output path.
    """
    from tqdm.auto import tqdm

    if batch_rows < 1 or part_rows < 1:
        raise RescoreError(f"batch_rows={batch_rows}, part_rows={part_rows}: both must be at least 1.")
    router = bundle if isinstance(bundle, Router) else shared_router(bundle)
    names = list(models) if models else list(router.models)
    router.model_columns(names)  # unknown LLM names fail here, before any work
    input_path, output = Path(input_path), Path(output)
    check_output(input_path, output)
    reader, total = open_input(input_path, table, batch_rows)
    check_prompt_column(reader.schema, prompt_column)
    schema = output_schema(reader.schema)
    directory = parts_dir(output)
    for stray in output.parent.glob(f".{output.name}.tmp-*"):
        stray.unlink()  # a final file that a killed run was writing
    parts = _complete_parts(directory, _fingerprint(input_path, table, prompt_column, names, router))
    done = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    if done:
        log.info("resuming: %d rows already scored in %d part(s) under %s", done, len(parts), directory)
    writer = _PartWriter(directory, schema, len(parts), part_rows)
    bar = tqdm(total=total, initial=done, unit="rows", desc="rescoring", disable=not progress,
               dynamic_ncols=True)
    try:
        for batch in _skip_rows(reader, done):
            writer.write(score_batch(router, batch, prompt_column, names))
            bar.update(batch.num_rows)
        writer.close()
    except BaseException:
        writer.abort()  # the complete parts stay for a rerun to resume from; the partial one goes
        raise
    finally:
        bar.close()
    parts = _complete_parts(directory, _fingerprint(input_path, table, prompt_column, names, router))
    _concatenate(parts, schema, output, batch_rows)
    shutil.rmtree(directory, ignore_errors=True)
    log.info("wrote %s", output)
    return output
