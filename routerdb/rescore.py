"""Batch rescoring: every row of a prompt log gets the best LLM and every LLM's score.

    routerdb rescore BUNDLE logs.parquet scored.parquet [--prompt-column prompt] [--models a,b]

The input is Parquet, CSV, or a table of a DuckDB database (`logs.duckdb --table logs`), read by
`routerdb.log_input`. The output is Parquet holding exactly the input rows, in order, with every
input column as it was, plus `route_best` (VARCHAR, the best LLM's name) and `route_scores`
(MAP(VARCHAR, DOUBLE), each LLM's score). A NULL prompt gets NULL in both.

Memory stays bounded whatever the log's size: the input is read as a stream of Arrow record
batches, each batch is scored (`score_batch`, also used by `routerdb.spark`) and written out at
once. Output goes to numbered part files in `OUTPUT.parts/`, each written under a temporary name
and renamed when complete; a run that is killed and started again skips the rows of the complete
parts, so no row is lost or written twice. When every row is scored the parts are concatenated
into OUTPUT (again through a temporary file and a rename) and the parts are removed. A run that
fails before completing a part leaves nothing behind.

The output must be named .parquet (or .pq). An existing file there is replaced only if an earlier
rescore wrote it (its Parquet metadata says so), or with `overwrite=True` (`--overwrite`). One run
at a time writes an output: a second gets "already being written by pid N" (an advisory lock on
`.OUTPUT.lock`; POSIX only). Files get the permissions the umask gives, like any other tool's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from routerdb import atomic
from routerdb.bundle import Bundle
from routerdb.log_input import BATCH_ROWS, LogInput, RescoreError, open_input, skip_rows
from routerdb.manifest import is_int
from routerdb.prompt_column import ON_INVALID_UTF8, InvalidUtf8, check_prompt_column, prompt_texts
from routerdb.router import Router, as_router
from routerdb.score_map import SCORES_TYPE, score_map

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two runs on one output are not told apart there
    fcntl = None

log = logging.getLogger(__name__)

ADDED = ("route_best", "route_scores")
PART_ROWS = 100_000  # rows per part file: the most a killed run has to redo
OUTPUT_SUFFIXES = (".parquet", ".pq")
OWNER = b"routerdb.rescore"  # Parquet metadata key: this file is a rescore output (its job, as JSON)
_PART = re.compile(r"part-(\d{6})\.parquet")
__all__ = ["RescoreError", "RescoreJob", "output_schema", "rescore", "run_job", "score_batch"]


@dataclass(frozen=True)
class RescoreJob:
    """One rescoring run: what it reads and writes and how (the flags of `routerdb rescore`)."""

    input: Path  # a Parquet or CSV file, or a DuckDB database with `table`
    output: Path  # the Parquet file to write
    prompt_column: str = "prompt"  # the column holding the prompt text
    models: tuple[str, ...] | None = None  # the LLMs scored (None: every LLM of the bundle)
    table: str | None = None  # the table to read when `input` is a DuckDB database
    cast_prompt: bool = False  # score the text form of a prompt column that is not text
    on_invalid_utf8: str = "error"  # a prompt whose bytes are not UTF-8: "error", or "replace" (U+FFFD)
    overwrite: bool = False  # replace an output file that rescore did not write
    batch_rows: int = BATCH_ROWS  # rows read and scored at a time
    part_rows: int = PART_ROWS  # rows per part file: the most a resumed run redoes
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", Path(self.input))
        object.__setattr__(self, "output", Path(self.output))
        if self.models is not None:
            object.__setattr__(self, "models", tuple(self.models))
            repeated = sorted({name for name in self.models if self.models.count(name) > 1})
            if not self.models or repeated:  # a MAP with a key twice is a file DuckDB refuses to read
                what = "no LLM" if not self.models else f"repeats {repeated!r}"
                raise RescoreError(f"models={list(self.models)!r:.200}: {what}; allowed: each LLM of the "
                                   "bundle at most once, at least one (None for all). Drop the repeats, or "
                                   "pass None.")
        if not (is_int(self.batch_rows, 1) and is_int(self.part_rows, 1)):
            raise RescoreError(f"batch_rows={self.batch_rows!r:.40}, part_rows={self.part_rows!r:.40}: both "
                               "must be integers of at least 1.")
        if self.on_invalid_utf8 not in ON_INVALID_UTF8:
            raise RescoreError(f"on_invalid_utf8={self.on_invalid_utf8!r}; allowed: "
                               f"{', '.join(ON_INVALID_UTF8)}.")

    def llm_names(self, router: Router) -> list[str]:
        """The LLMs this job scores with `router`."""
        return list(self.models) if self.models else sorted(router.models)  # as route_scores in SQL

    def fingerprint(self, router: Router) -> dict:
        """What a resumed run must share with the run that wrote the parts (kept as JSON in the
        parts' state.json and in the output's Parquet metadata)."""
        stat = self.input.stat()
        return {"input": str(self.input.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "table": self.table, "prompt_column": self.prompt_column, "models": self.llm_names(router),
                "cast_prompt": self.cast_prompt, "on_invalid_utf8": self.on_invalid_utf8,
                "bundle_digest": router.bundle.digest}


# --- scoring one Arrow batch (shared with routerdb.spark) --------------------------------------


def output_schema(schema: pa.Schema) -> pa.Schema:
    """The input schema plus `route_best` and `route_scores`."""
    clash = [name for name in ADDED if name in schema.names]
    if clash:
        raise RescoreError(f"the input already has column(s) {clash}; rescoring adds {list(ADDED)}. "
                           "Rename or drop those columns first (e.g. SELECT * EXCLUDE (...)).")
    return schema.append(pa.field("route_best", pa.string())).append(pa.field("route_scores", SCORES_TYPE))


def score_batch(router: Router, batch: pa.RecordBatch, prompt_column: str = "prompt",
                models: Sequence[str] | None = None, *, on_invalid_utf8: str = "error") -> pa.RecordBatch:
    """`batch` with `route_best` and `route_scores` appended (over `models`, default: all).

    The prompt column may be any type `check_prompt_column` lets through (text, dictionary-encoded
    text, or a type cast to text); it is written out as it was. Raises InvalidUtf8 naming the row
    of the batch whose bytes are not UTF-8, unless `on_invalid_utf8="replace"`.
    """
    names = list(models) if models else sorted(router.models)  # the order of route_scores in SQL
    cols = router.model_columns(names)
    prompts = prompt_texts(batch.column(prompt_column), on_invalid_utf8)
    valid = np.fromiter((p is not None for p in prompts), dtype=bool, count=len(prompts))
    scores = np.zeros((len(prompts), len(names)), dtype=np.float64)
    if valid.any():
        scores[valid] = router.score_all([p for p in prompts if p is not None])[:, cols]
    best = np.asarray(names, dtype=object)[scores.argmax(axis=1)] if names else np.full(len(prompts), None)
    best_array = pa.array(best, type=pa.string(), mask=~valid)
    schema = output_schema(batch.schema)
    return pa.RecordBatch.from_arrays([*batch.columns, best_array, score_map(names, scores, ~valid)],
                                      schema=schema)


# --- the output: its format, its owner, one writer at a time ------------------------------------


def check_output(input_path: Path, output: Path, overwrite: bool = False) -> None:
    """Refuse, before any work, an output that is not .parquet, a directory, the input, a file
    rescore did not write (unless `overwrite`), or one that cannot be written."""
    if output.is_dir():
        raise RescoreError(f"output {str(output)!r} is a directory; pass the path of the Parquet file to "
                           "write (e.g. scored.parquet).")
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise RescoreError(f"output {str(output)!r} is named {output.suffix or 'without a suffix'}; rescore "
                           "writes Parquet (the scores are a MAP column). Name the output .parquet, e.g. "
                           f"{output.with_suffix('.parquet').name}.")
    if output.exists() and input_path.exists() and output.resolve() == input_path.resolve():
        raise RescoreError(f"output {str(output)!r} is the same file as the input; rescoring would "
                           "overwrite the input. Write to another file.")
    if (output.exists() or output.is_symlink()) and not overwrite and not _written_by_rescore(output):
        raise RescoreError(f"output {str(output)!r} exists and was not written by routerdb rescore; "
                           "refusing to replace it. Pass --overwrite (overwrite=True) to replace it, or "
                           "write to another file.")
    try:
        atomic.check_writable(output.parent)
    except OSError as exc:
        raise RescoreError(f"output {str(output)!r} cannot be written: {atomic.os_reason(exc)}. Choose a "
                           "path in a writable directory.") from None


def _written_by_rescore(path: Path) -> bool:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError):
        return False
    return OWNER in metadata


class OutputLock:
    """Held while a run writes OUTPUT (an flock on `.OUTPUT.lock`, which names the writer's pid)."""

    def __init__(self, output: Path):
        self.output, self.path, self._fd = output, output.with_name(f".{output.name}.lock"), None

    def __enter__(self) -> OutputLock:
        if fcntl is None:
            return self
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by another process
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise RescoreError(f"output {str(self.output)!r} is already being written by pid {holder} "
                                   "(another routerdb rescore); wait for it to finish, or write to another "
                                   "file.") from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
            else:  # locked a file its finished writer had already removed: lock the one there now
                os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiting run then makes a new file
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the one at `path` (not removed or replaced meanwhile)."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# --- parts, resuming, and the final file --------------------------------------------------------


def parts_dir(output: str | os.PathLike[str]) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".parts")


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
                self._open()
            take = min(batch.num_rows, self.part_rows - self._rows)
            self._writer.write_batch(batch.slice(0, take))
            self._rows += take
            batch = batch.slice(take)
            if self._rows == self.part_rows:
                self.close()

    def _open(self) -> None:
        self._tmp = self.directory / f".part-{self.index:06d}.tmp"
        try:
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        except BaseException:  # e.g. a full disk: the file exists, empty, and no writer owns it
            self._tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Drop the part being written (after an error: disk full, an interrupt)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # the error that got us here may break closing too
                pass
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self._tmp, self.directory / f"part-{self.index:06d}.parquet")
        self._writer, self._tmp, self._rows, self.index = None, None, 0, self.index + 1


def _concatenate(parts: list[Path], schema: pa.Schema, output: Path, batch_rows: int) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.tmp-", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        atomic.follow_umask(tmp)  # mkstemp makes it 0600 whatever the umask
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_rows):
                    writer.write_batch(batch)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _score_into_parts(router: Router, source: LogInput, writer: _PartWriter, done: int, job: RescoreJob
                      ) -> None:
    """Score every row after the first `done` into part files; on failure keep only complete parts."""
    from tqdm.auto import tqdm  # progress bars only where a run shows one

    bar = tqdm(total=source.rows, initial=done, unit="rows", desc="rescoring", disable=not job.progress,
               dynamic_ncols=True)
    row = done
    try:
        for batch in skip_rows(source.reader, done):
            writer.write(_scored(router, batch, job, source, row))
            row += batch.num_rows
            bar.update(batch.num_rows)
        writer.close()
    except BaseException:
        writer.abort()  # the complete parts stay for a rerun to resume from; the partial one goes
        if writer.index == 0:
            shutil.rmtree(writer.directory, ignore_errors=True)  # nothing to resume: leave nothing behind
        raise
    finally:
        bar.close()


def _scored(router: Router, batch: pa.RecordBatch, job: RescoreJob, source: LogInput, row: int
            ) -> pa.RecordBatch:
    column = job.prompt_column
    try:
        return score_batch(router, batch, column, job.models, on_invalid_utf8=job.on_invalid_utf8)
    except InvalidUtf8 as exc:
        raise RescoreError(
            f"input {str(source.path)!r}, {source.where(row + exc.row)}, column {column!r}: bytes that are "
            f"not valid UTF-8 ({exc.value[:40]!r}); allowed: UTF-8 text. Rerun with --on-invalid-utf8 "
            "replace to score such prompts with U+FFFD in place of the bad bytes (the column is written "
            "as it was), or fix the file (e.g. iconv -c).") from None


def rescore(bundle: str | os.PathLike[str] | Bundle | Router, input_path: str | os.PathLike[str],
            output: str | os.PathLike[str], **options: Any) -> Path:
    """Rescore a prompt log into `output` (Parquet); resumes an interrupted run of the same job.

    `bundle` is a bundle path or a `Router`; `options` are the other fields of `RescoreJob`
    (`prompt_column`, `models`, `table`, `cast_prompt`, `on_invalid_utf8`, `overwrite`,
    `batch_rows`, `part_rows`, `progress`). Returns the output path.
    """
    return run_job(bundle, RescoreJob(Path(input_path), Path(output), **options))


def run_job(bundle: str | os.PathLike[str] | Bundle | Router, job: RescoreJob) -> Path:
    """Run `job` with the Router of `bundle`; returns the output path."""
    router = as_router(bundle)
    router.model_columns(job.llm_names(router))  # unknown LLM names fail here, before any work
    check_output(job.input, job.output, job.overwrite)
    output = job.output
    with OutputLock(output):
        source = open_input(job.input, job.table, job.batch_rows)
        check_prompt_column(source.reader.schema, job.prompt_column, job.cast_prompt)
        fingerprint = job.fingerprint(router)
        schema = output_schema(source.reader.schema).with_metadata(
            {**(source.reader.schema.metadata or {}), OWNER: json.dumps(fingerprint).encode()})
        for stray in output.parent.glob(f".{output.name}.tmp-*"):
            stray.unlink()  # a final file that a killed run was writing
        directory = parts_dir(output)
        parts = _complete_parts(directory, fingerprint)
        done = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        if done:
            log.info("resuming: %d rows already scored under %s", done, directory)
        writer = _PartWriter(directory, schema, len(parts), job.part_rows)
        _score_into_parts(router, source, writer, done, job)
        _concatenate(_complete_parts(directory, fingerprint), schema, output, job.batch_rows)
        shutil.rmtree(directory, ignore_errors=True)
    log.info("wrote %s", output)
    return output
