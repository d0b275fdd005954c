"""routerdb.spark.rescore on a Spark cluster of two executor processes (`local-cluster[2,1,1024]`: a
master, two workers and their executors, each its own JVM and Python workers), the bundle shipped to
them with `SparkContext.addFile`, as the module's docstring says to deploy it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routerdb.rescore import RescoreError, rescore
from routerdb.router import UnknownModelError, shared_router
from routerdb.spark import rescore as spark_rescore
from routerdb.spark import worker_router

TOPICS = ["Write a Python function that merges two lists.", "Name the largest planet.",
          "Solve 4x - 3 = 9.", "SELECT id FROM orders WHERE total > 10;", "Write a limerick about cats."]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers run this venv's Python
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (SparkSession.builder.master("local-cluster[2,1,1024]").appName("routerdb-test")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.memory", "512m")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
               .config("spark.executorEnv.ROUTERDB_THREADS", "1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    app = session.sparkContext.applicationId
    yield session
    session.stop()
    # the workers ran the executors in SPARK_HOME/work/<application> (SPARK_HOME: the pyspark
    # package unless set): leave nothing behind there
    import pyspark

    home = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent)
    shutil.rmtree(home / "work" / app, ignore_errors=True)


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    n = 120
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "prompt": [None if i % 17 == 4 else f"{TOPICS[i % 5]} ({i % 23})" for i in range(n)],
        "team": [f"t{i % 4}" for i in range(n)],
    })
    path = tmp_path_factory.mktemp("spark") / "log.parquet"
    pq.write_table(table, path)
    return path


def rows_by_id(df) -> dict[int, dict]:
    return {r["id"]: r.asDict() for r in df.collect()}


def test_spark_rescore_matches_the_local_rescore(spark, tiny_bundle, log_file, tmp_path):
    df = spark.read.parquet(str(log_file)).repartition(3)  # several partitions, several batches each
    scored = spark_rescore(df, tiny_bundle)
    assert scored.columns == ["id", "prompt", "team", "route_best", "route_scores"]
    assert scored.schema["route_scores"].dataType.simpleString() == "map<string,double>"
    got = rows_by_id(scored)
    local = rescore(tiny_bundle, log_file, tmp_path / "local.parquet", progress=False)
    want = pq.read_table(local).to_pylist()
    assert sorted(got) == [r["id"] for r in want]  # every row once
    for row in want:
        g = got[row["id"]]
        assert (g["prompt"], g["team"], g["route_best"]) == (row["prompt"], row["team"], row["route_best"])
        if row["route_scores"] is None:
            assert g["route_scores"] is None
            continue
        expected = dict(row["route_scores"])
        assert set(g["route_scores"]) == set(expected)
        np.testing.assert_allclose([g["route_scores"][k] for k in expected], list(expected.values()),
                                   atol=1e-6)


def where_bundles_were_loaded(spark, bundle) -> set[tuple[int, str, str]]:
    """(executor pid, the bundle directory its router loaded, its SparkFiles root) per task."""
    from pyspark import SparkFiles

    path, digest = str(Path(bundle).resolve()), shared_router(bundle).bundle.digest

    def probe(_):
        router = worker_router(path, digest, True)
        files = Path(SparkFiles.getRootDirectory()).resolve()
        yield os.getppid(), str(router.bundle.path.resolve()), str(files)

    return set(spark.sparkContext.parallelize(range(8), 8).mapPartitions(probe).collect())


def test_the_bundle_is_shipped_to_two_executors(spark, tiny_bundle, log_file):
    assert spark.sparkContext.master == "local-cluster[2,1,1024]"
    spark_rescore(spark.read.parquet(str(log_file)), tiny_bundle).count()  # ships the bundle (addArchive)
    seen = where_bundles_were_loaded(spark, tiny_bundle)
    assert len({executor for executor, _, _ in seen}) == 2  # two executor processes scored
    for _, loaded, files in seen:
        assert loaded != str(Path(tiny_bundle).resolve())  # not the driver's path ...
        assert Path(loaded).parent == Path(files)  # ... but the executor's shipped copy


def test_spark_rescore_with_a_subset_of_llms_and_a_renamed_column(spark, tiny_bundle):
    df = spark.createDataFrame([(1, TOPICS[0]), (2, TOPICS[1])], "id long, text string")
    got = rows_by_id(spark_rescore(df, tiny_bundle, prompt_column="text", models=["weak", "coder"]))
    want = shared_router(tiny_bundle).score([TOPICS[0], TOPICS[1]], ["weak", "coder"])
    for i, row in ((1, want[0]), (2, want[1])):
        assert list(got[i]["route_scores"]) in (["weak", "coder"], ["coder", "weak"])
        assert got[i]["route_best"] == ["weak", "coder"][int(np.argmax(row))]
        np.testing.assert_allclose([got[i]["route_scores"]["weak"], got[i]["route_scores"]["coder"]], row,
                                   atol=1e-6)


def test_spark_errors_are_raised_on_the_driver(spark, tiny_bundle):
    df = spark.createDataFrame([(1, "hi")], "id long, text string")
    with pytest.raises(RescoreError, match=r"no column 'prompt' in the DataFrame; its columns are \['id'"):
        spark_rescore(df, tiny_bundle)
    with pytest.raises(RescoreError, match=r"column 'id' is bigint, not a string"):
        spark_rescore(df, tiny_bundle, prompt_column="id")
    with pytest.raises(UnknownModelError, match=r"unknown LLM 'gpt-9'"):
        spark_rescore(df, tiny_bundle, prompt_column="text", models=["gpt-9"])
