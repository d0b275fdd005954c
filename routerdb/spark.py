"""Rescore a Spark DataFrame with a router: the Arrow batch scorer of `routerdb rescore`, scaled out.

    from routerdb.spark import rescore
    scored = rescore(spark.read.parquet("s3://bucket/logs/"), "/path/to/bundle")
    scored.write.parquet("s3://bucket/logs-scored/")

The result is the DataFrame with two more columns, `route_best` (STRING, the best LLM) and
`route_scores` (MAP<STRING, DOUBLE>, each LLM's score); a NULL prompt gives NULL in both. It runs
through `DataFrame.mapInArrow`: each Python worker gets Arrow record batches and scores them with
`routerdb.rescore.score_batch` (each distinct prompt of a batch encoded once, a cache per worker).

On a cluster:
- Executors need routerdb and its torch-free runtime (onnxruntime, tokenizers, numpy, pyarrow):
  install it on every node, or ship a packed environment (`venv-pack` + `spark.archives`, with
  `PYSPARK_PYTHON` pointing into it).
- The bundle directory is packed into a tar archive named by its digest and shipped to the
  executors with `SparkContext.addArchive` (`ship=True`, the default; Spark unpacks it in each
  executor's SparkFiles directory); each worker checks the copy's checksums and digest before
  loading it once. (`addFile(directory, recursive=True)` is refused by Spark outside local mode.)
  A bundle on storage that every executor can read at the same path (NFS, a DBFS fuse mount) can
  be used in place with `ship=False`. Tested on `local-cluster[2,1,1024]`: two executor processes.
- ONNX Runtime threads per worker: set `ROUTERDB_THREADS` to the cores of one task
  (`spark.executorEnv.ROUTERDB_THREADS` = `spark.task.cpus`), or workers oversubscribe the cores.
- Batch size: `spark.sql.execution.arrow.maxRecordsPerBatch` (default 10,000 rows).
- With a GPU per executor and onnxruntime-gpu installed, workers use the CUDA provider.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from routerdb.bundle import Bundle, BundleError
from routerdb.rescore import ADDED, RescoreError, score_batch
from routerdb.router import Router, UnknownModelError, shared_router

log = logging.getLogger(__name__)

_SHIPPED: set[tuple[str, str]] = set()  # (Spark application id, bundle digest) already sent to the executors

def rescore(df, bundle: str | os.PathLike[str] | Bundle, prompt_column: str = "prompt",
            models: Sequence[str] | None = None, *, ship: bool = True):
    """`df` with `route_best` and `route_scores` added, scored on the executors (lazy, like any
    DataFrame transformation). `models` limits the LLMs scored (default: all of the bundle's)."""
    from pyspark.sql import types as T  # pyspark is optional: the spark extra

    loaded = Bundle.load(bundle)  # checked on the driver first: a bad bundle fails here
    names = list(models) if models else list(loaded.model_names)
    unknown = [m for m in names if m not in loaded.model_names]
    if unknown:
        raise UnknownModelError(unknown, loaded.model_names)
    _check_columns(df, prompt_column)
    schema = T.StructType([*df.schema.fields, T.StructField("route_best", T.StringType()),
                           T.StructField("route_scores", T.MapType(T.StringType(), T.DoubleType()))])
    path = loaded.path.resolve()
    if ship:
        try:
            sc = df.sparkSession.sparkContext
        except Exception as exc:  # Spark Connect sessions have no SparkContext
            raise RescoreError(f"cannot ship the bundle: this Spark session has no SparkContext ({exc}). "
                               "Put the bundle at a path every executor can read and pass "
                               "ship=False.") from exc
        _ship(sc, path, loaded.digest)
    digest = loaded.digest

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        router = worker_router(str(path), digest, ship)
        for batch in batches:
            yield score_batch(router, batch, prompt_column, names)

    return df.mapInArrow(score_partition, schema)


def _check_columns(df, prompt_column: str) -> None:
    from pyspark.sql import types as T  # pyspark is optional: the spark extra

    fields = {f.name: f.dataType for f in df.schema.fields}
    if prompt_column not in fields:
        raise RescoreError(f"no column {prompt_column!r} in the DataFrame; its columns are "
                           f"{list(fields)}. Pass the prompt column as prompt_column=.")
    if not isinstance(fields[prompt_column], T.StringType):
        raise RescoreError(f"column {prompt_column!r} is {fields[prompt_column].simpleString()}, not "
                           "a string; pass the column holding the prompt text as prompt_column=.")
    clash = [name for name in ADDED if name in fields]
    if clash:
        raise RescoreError(f"the DataFrame already has column(s) {clash}; rescore adds {list(ADDED)}. "
                           "Drop or rename them first.")


def archive_name(digest: str) -> str:
    """The name of the shipped archive of the bundle with `digest` (and of its unpacked copy)."""
    return f"routerdb-bundle-{digest[:16]}.tar"


def _ship(sc, path: Path, digest: str) -> None:
    """Send the bundle to every executor as an archive (once per Spark application and bundle)."""
    key = (sc.applicationId, digest)
    if key in _SHIPPED:
        return
    # the driver serves the archive whenever an executor asks: it lives until this process ends
    folder = Path(tempfile.mkdtemp(prefix="routerdb-ship-"))
    atexit.register(shutil.rmtree, folder, True)
    archive = folder / archive_name(digest)
    with tarfile.open(archive, "w") as tar:  # uncompressed: ONNX weights hardly compress
        for item in sorted(path.rglob("*")):
            if item.is_file():
                tar.add(item, arcname=str(item.relative_to(path)))
    sc.addArchive(str(archive))
    _SHIPPED.add(key)


def worker_router(path: str, digest: str, shipped: bool) -> Router:
    """The Router of this worker process for the bundle with `digest` (the process-wide one)."""
    return shared_router(_locate(path, digest, shipped))


def _locate(path: str, digest: str, shipped: bool) -> Bundle:
    candidates = []
    if shipped:
        from pyspark import SparkFiles  # pyspark is optional: the spark extra

        candidates.append(Path(SparkFiles.get(archive_name(digest))))
    candidates.append(Path(path))
    seen = []
    for where in candidates:
        if not where.is_dir():
            continue
        loaded = Bundle.load(where)
        if loaded.digest == digest:
            return loaded
        seen.append(f"{where} (digest {loaded.digest[:12]}...)")
    raise BundleError(f"no copy of the bundle (digest {digest[:12]}...) on this executor; looked at "
                      f"{[str(c) for c in candidates]}{', found ' + ', '.join(seen) if seen else ''}. "
                      "Use ship=True, or put the bundle at the same path on every executor.")
