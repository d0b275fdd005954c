"""`routerdb rescore`: exact rows in order, every input format, errors, bounded memory, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import FrozenInstanceError
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routerdb.cli import main
from routerdb.rescore import OWNER, RescoreError, RescoreJob, parts_dir, rescore, run_job
from routerdb.router import shared_router
from tests.paths import REPO

TOPICS = ["Write a Python function that sorts a list.", "What is the capital of Peru?",
          "Solve 3x + 5 = 20.", "SELECT name FROM users;", "Write a poem about rain."]


def log_table(n: int, payload: int = 0) -> pa.Table:
    """A prompt log: some prompts repeat, some are NULL, plus columns that must survive as they are."""
    prompts = [None if i % 11 == 5 else f"{TOPICS[i % 5]} #{i % 37}" for i in range(n)]
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "prompt": pa.array(prompts, pa.string()),
        "user": pa.array([f"u{i % 3}" for i in range(n)], pa.string()),
        "latency_ms": pa.array([None if i % 13 == 0 else i * 0.5 for i in range(n)], pa.float64()),
        "payload": pa.array([f"{i:08d}" + "x" * payload for i in range(n)], pa.string()),
    })


@pytest.fixture(scope="module")
def log_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "log.parquet"
    pq.write_table(log_table(1_000), path, row_group_size=300)
    return path


@pytest.fixture(scope="module")
def expected(tiny_bundle, log_file) -> pa.Table:
    """The one-shot result every other way of running must reproduce."""
    out = log_file.with_name("expected.parquet")
    rescore(tiny_bundle, log_file, out, progress=False)
    return pq.read_table(out)


def test_rows_columns_and_scores(tiny_bundle, log_file, expected):
    source = pq.read_table(log_file)
    assert expected.column_names == [*source.column_names, "route_best", "route_scores"]
    assert expected.select(source.column_names).equals(source)  # every input row, in order
    router = shared_router(tiny_bundle)
    names = list(router.models)
    prompts = source["prompt"].to_pylist()
    want = router.score(["" if p is None else p for p in prompts])
    best, maps = expected["route_best"].to_pylist(), expected["route_scores"].to_pylist()
    for i, prompt in enumerate(prompts):
        if prompt is None:
            assert best[i] is None and maps[i] is None
            continue
        assert [k for k, _ in maps[i]] == names
        np.testing.assert_allclose([v for _, v in maps[i]], want[i], rtol=0, atol=1e-6)
        assert best[i] == names[int(np.argmax(want[i]))]
    assert not parts_dir(log_file.with_name("expected.parquet")).exists()  # parts cleaned up


def test_many_small_parts_give_the_same_file(tiny_bundle, log_file, expected, tmp_path):
    out = tmp_path / "out.parquet"
    rescore(tiny_bundle, log_file, out, batch_rows=64, part_rows=150, progress=False)
    assert pq.read_table(out).equals(expected)


def test_csv_and_duckdb_table_inputs(tiny_bundle, log_file, expected, tmp_path):
    con = duckdb.connect(str(tmp_path / "logs.duckdb"))
    con.execute("CREATE TABLE logs AS SELECT * FROM read_parquet(?)", [str(log_file)])
    con.execute("COPY logs TO ? (HEADER)", [str(tmp_path / "logs.csv")])
    con.close()
    from_csv, from_db = tmp_path / "csv.parquet", tmp_path / "db.parquet"
    rescore(tiny_bundle, tmp_path / "logs.csv", from_csv, progress=False)
    rescore(tiny_bundle, tmp_path / "logs.duckdb", from_db, table="logs", progress=False)
    assert pq.read_table(from_csv)["id"].to_pylist() == [str(i) for i in range(1_000)]  # CSV: the text
    assert pq.read_table(from_db)["id"].to_pylist() == list(range(1_000))
    for path in (from_csv, from_db):
        got = pq.read_table(path)
        assert got["prompt"].to_pylist() == expected["prompt"].to_pylist()
        assert got["route_best"].to_pylist() == expected["route_best"].to_pylist()
        assert got["route_scores"].to_pylist() == expected["route_scores"].to_pylist()


def test_models_subset(tiny_bundle, log_file, expected, tmp_path):
    out = tmp_path / "two.parquet"
    assert main(["rescore", str(tiny_bundle), str(log_file), str(out), "--models", "weak,coder",
                 "--no-progress"]) == 0
    got = pq.read_table(out)
    for row, full in zip(got["route_scores"].to_pylist(), expected["route_scores"].to_pylist(), strict=True):
        if row is None:
            assert full is None
            continue
        assert [k for k, _ in row] == ["weak", "coder"]
        assert dict(row) == {k: v for k, v in full if k in ("weak", "coder")}
    best = got["route_best"].to_pylist()
    assert {b for b in best if b is not None} <= {"weak", "coder"}


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt-column", "text"], r"no column 'text' in the input; its columns are \['id', 'prompt'"),
    (["--prompt-column", "id"], r"column 'id' is int64, not text"),
    (["--models", "coder,gpt-17"], r"unknown LLM 'gpt-17'"),
    (["--table", "logs"], r"cannot open .*log.parquet' as a DuckDB database .*Drop --table"),
])
def test_errors_say_what_and_how_to_fix(tiny_bundle, log_file, tmp_path, capsys, args, message):
    assert main(["rescore", str(tiny_bundle), str(log_file), str(tmp_path / "o.parquet"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "o.parquet").exists()


def test_existing_output_columns_are_refused(tiny_bundle, tmp_path):
    path = tmp_path / "scored.parquet"
    pq.write_table(pa.table({"prompt": ["hi"], "route_best": ["x"]}), path)
    with pytest.raises(RescoreError, match=r"already has column\(s\) \['route_best'\].*Rename or drop"):
        rescore(tiny_bundle, path, tmp_path / "o.parquet", progress=False)


def test_empty_input_gives_empty_output(tiny_bundle, tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(log_table(0), path)
    got = pq.read_table(rescore(tiny_bundle, path, tmp_path / "o.parquet", progress=False))
    assert got.num_rows == 0 and got.column_names[-2:] == ["route_best", "route_scores"]


def assert_same_output(got: pa.Table, want: pa.Table) -> None:
    """Same rows, columns and order; scores equal up to float32 rounding (ONNX Runtime's last bit can
    depend on which other prompts share an encoder batch, and a resumed run batches differently)."""
    assert got.schema.equals(want.schema)
    rest = [c for c in want.column_names if c != "route_scores"]
    assert got.select(rest).equals(want.select(rest))
    for a, b in zip(got["route_scores"].to_pylist(), want["route_scores"].to_pylist(), strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert [k for k, _ in a] == [k for k, _ in b]
            np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=0, atol=1e-6)


def _rescore_cmd(bundle, src, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "routerdb.cli", "rescore", str(bundle), str(src), str(out),
            "--batch-rows", "50", "--part-rows", "100", "--no-progress", *extra]


# Slows each batch down so the kill lands half-way, whatever the machine's speed.
SLOW = ("import sys, time, routerdb.rescore as r; f = r.score_batch; "
        "r.score_batch = lambda *a, **k: (time.sleep(0.1), f(*a, **k))[1]; "
        "from routerdb.cli import main; sys.exit(main(sys.argv[1:]))")


def test_killed_run_resumes_without_losing_or_repeating_rows(tiny_bundle, log_file, expected, tmp_path):
    out = tmp_path / "resumed.parquet"
    cmd = _rescore_cmd(tiny_bundle, log_file, out)
    proc = subprocess.Popen([sys.executable, "-c", SLOW, *cmd[3:]], cwd=REPO)
    parts = parts_dir(out)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = sorted(parts.glob("part-*.parquet"))
    assert 3 <= len(done) < 10 and not out.exists()  # killed half-way: 1,000 rows make 10 parts
    state = json.loads((parts / "state.json").read_text())
    assert state["prompt_column"] == "prompt"
    subprocess.run(cmd, cwd=REPO, check=True)
    assert_same_output(pq.read_table(out), expected)
    assert not parts.exists()



def test_job_is_one_frozen_checked_object():
    job = RescoreJob("logs.parquet", "out.parquet", models=["coder", "chat"])
    assert (job.input, job.output) == (Path("logs.parquet"), Path("out.parquet"))
    assert job.models == ("coder", "chat")
    with pytest.raises(FrozenInstanceError):
        job.part_rows = 1
    with pytest.raises(RescoreError, match=r"batch_rows=0, part_rows=100000: both must be integers"):
        RescoreJob("logs.parquet", "out.parquet", batch_rows=0)
    with pytest.raises(RescoreError, match=r"on_invalid_utf8='drop'; allowed: error, replace"):
        RescoreJob("logs.parquet", "out.parquet", on_invalid_utf8="drop")


def test_run_job_writes_what_rescore_writes_and_records_the_job(tiny_bundle, log_file, expected, tmp_path):
    out = run_job(tiny_bundle, RescoreJob(log_file, tmp_path / "o.parquet", batch_rows=100, progress=False))
    assert pq.read_table(out).equals(expected)
    recorded = json.loads(pq.read_schema(out).metadata[OWNER])
    assert list(recorded) == ["input", "bytes", "mtime_ns", "table", "prompt_column", "models", "cast_prompt",
                              "on_invalid_utf8", "bundle_digest"]  # what resuming compares: kept as it was
    assert recorded["models"] == list(shared_router(tiny_bundle).models)
    assert (recorded["table"], recorded["prompt_column"]) == (None, "prompt")
    assert (recorded["cast_prompt"], recorded["on_invalid_utf8"]) == (False, "error")


def test_interrupted_concatenation_resumes(tiny_bundle, log_file, expected, tmp_path, monkeypatch):
    import routerdb.rescore as module

    out = tmp_path / "o.parquet"

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "_concatenate", fail)
    with pytest.raises(KeyboardInterrupt):
        rescore(tiny_bundle, log_file, out, part_rows=400, progress=False)
    assert len(list(parts_dir(out).glob("part-*.parquet"))) == 3
    monkeypatch.undo()
    calls = []
    original = module.score_batch
    monkeypatch.setattr(module, "score_batch", lambda *a, **k: calls.append(1) or original(*a, **k))
    rescore(tiny_bundle, log_file, out, part_rows=400, progress=False)
    assert calls == []  # every row was already scored: nothing is scored twice
    assert pq.read_table(out).equals(expected)


def test_parts_of_another_job_are_not_mixed_in(tiny_bundle, log_file, tmp_path, monkeypatch):
    import routerdb.rescore as module

    out = tmp_path / "o.parquet"
    monkeypatch.setattr(module, "_concatenate", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        rescore(tiny_bundle, log_file, out, progress=False)
    monkeypatch.undo()
    with pytest.raises(RescoreError, match=r"parts of a different rescoring job \(models changed since\)"):
        rescore(tiny_bundle, log_file, out, models=["coder"], progress=False)


# VmHWM is this process's own peak (ru_maxrss would carry over pytest's peak through fork + exec).
MEASURE = """
import re, sys
from routerdb.rescore import rescore
rescore(sys.argv[1], sys.argv[2], sys.argv[3], batch_rows=2048, part_rows=20_000, progress=False)
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024)
"""


def test_memory_does_not_grow_with_the_log(tiny_bundle, tmp_path):
    """Peak memory for 20k and 100k rows of 1 KB each: the difference (80 MB of rows) must not show."""
    peaks = []
    for n in (20_000, 100_000):
        src = tmp_path / f"log{n}.parquet"
        pq.write_table(log_table(n, payload=1_000), src)
        done = subprocess.run([sys.executable, "-c", MEASURE, str(tiny_bundle), str(src),
                               str(tmp_path / f"out{n}.parquet")], cwd=REPO, check=True,
                              capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        peaks.append(int(done.stdout.split()[-1]))
        assert pq.ParquetFile(tmp_path / f"out{n}.parquet").metadata.num_rows == n
    assert peaks[1] - peaks[0] < 40, f"peak RSS {peaks} MiB: memory grows with the number of rows"


def _bad_utf8_log(path: Path, bad_row: int, n: int = 8) -> None:
    """A Parquet log whose prompt column holds bytes that are not UTF-8 at `bad_row` (3-row groups)."""
    values = [f"prompt {i}".encode() for i in range(n)]
    values[bad_row] = b"caf\xe9 au lait"  # latin-1, not UTF-8
    raw = pa.array(values, pa.binary())
    prompt = pa.Array.from_buffers(pa.string(), n, raw.buffers())
    pq.write_table(pa.table({"id": range(n), "prompt": prompt}), path, row_group_size=3)


def test_invalid_utf8_names_file_row_and_column_and_leaves_nothing(tiny_bundle, tmp_path):
    src, out = tmp_path / "bad.parquet", tmp_path / "out.parquet"
    _bad_utf8_log(src, bad_row=4)
    where = r"bad.parquet', row 4 \(row group 1, row 1 within it\), column 'prompt': "
    with pytest.raises(RescoreError, match=where + r"bytes that are not valid UTF-8 \(b'caf\\xe9 au lait'\); "
                                           r"allowed: UTF-8 text. Rerun with --on-invalid-utf8 replace"):
        rescore(tiny_bundle, src, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]  # no state.json, no parts
    rescore(tiny_bundle, src, out, progress=False, on_invalid_utf8="replace")
    got = pq.read_table(out)
    assert got["prompt"].chunk(0).view(pa.binary())[4].as_py() == b"caf\xe9 au lait"  # written as it was
    want = shared_router(tiny_bundle).best(["caf\ufffd au lait"])[0]
    assert got["route_best"][4].as_py() == want


def test_dictionary_large_string_and_cast_prompts(tiny_bundle, tmp_path):
    import pandas as pd

    texts = ["Solve 3x + 5 = 20.", "Write a poem about rain.", None, "Solve 3x + 5 = 20."]
    plain = _parquet(tmp_path / "plain.parquet", pa.table({"prompt": texts}))
    want = pq.read_table(rescore(tiny_bundle, plain, tmp_path / "plain_out.parquet", progress=False))
    frame = pd.DataFrame({"prompt": pd.Categorical(texts)})  # dictionary-encoded in Parquet
    for name, table in (("categorical", pa.Table.from_pandas(frame, preserve_index=False)),
                        ("large", pa.table({"prompt": pa.array(texts, pa.large_string())}))):
        source = _parquet(tmp_path / f"{name}.parquet", table)
        got = pq.read_table(rescore(tiny_bundle, source, tmp_path / f"{name}_out.parquet", progress=False))
        assert got["route_best"].to_pylist() == want["route_best"].to_pylist(), name
        assert got["prompt"].type == pq.read_table(source)["prompt"].type  # written as it was read
    numbers = _parquet(tmp_path / "ids.parquet", pa.table({"prompt": pa.array([7, None, 42], pa.int64())}))
    with pytest.raises(RescoreError, match=r"column 'prompt' is int64, not text; pass --cast-prompt"):
        rescore(tiny_bundle, numbers, tmp_path / "ids_out.parquet", progress=False)
    got = pq.read_table(rescore(tiny_bundle, numbers, tmp_path / "ids_out.parquet", progress=False,
                                cast_prompt=True))
    assert got["prompt"].type == pa.int64() and got["prompt"].to_pylist() == [7, None, 42]
    assert got["route_best"].to_pylist() == [*shared_router(tiny_bundle).best(["7"]), None,
                                             *shared_router(tiny_bundle).best(["42"])]


def _parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def test_quoted_empty_csv_prompt_is_kept(tiny_bundle, tmp_path):
    src = tmp_path / "log.csv"
    src.write_text('id,prompt\n1,""\n2,\n3,hi\n')
    got = pq.read_table(rescore(tiny_bundle, src, tmp_path / "out.parquet", progress=False))
    assert got["prompt"].to_pylist() == ["", None, "hi"]  # "" stays '' (was NULL), empty stays NULL
    assert got["route_best"].to_pylist() == [*shared_router(tiny_bundle).best([""]), None,
                                             *shared_router(tiny_bundle).best(["hi"])]


def test_output_rules(tiny_bundle, log_file, tmp_path):
    mine = tmp_path / "report.parquet"
    pq.write_table(pa.table({"keep": [1]}), mine)
    with pytest.raises(RescoreError, match=r"exists and was not written by routerdb rescore; refusing to "
                                           r"replace it. Pass --overwrite"):
        rescore(tiny_bundle, log_file, mine, progress=False)
    assert pq.read_table(mine).column_names == ["keep"]
    rescore(tiny_bundle, log_file, mine, progress=False, overwrite=True)
    rescore(tiny_bundle, log_file, mine, progress=False, models=["chat"])  # its own output: replaced freely
    assert [k for k, _ in pq.read_table(mine)["route_scores"][0].as_py()] == ["chat"]
    csv = tmp_path / "out.csv"
    with pytest.raises(RescoreError, match=r"out.csv' is named .csv; rescore writes Parquet .* Name the "
                                           r"output .parquet, e.g. out.parquet"):
        rescore(tiny_bundle, log_file, csv, progress=False)
    assert not csv.exists()


def test_files_follow_the_umask(tiny_bundle, log_file, tmp_path):
    import stat

    before = os.umask(0o027)
    try:
        out = rescore(tiny_bundle, log_file, tmp_path / "out.parquet", progress=False)
    finally:
        os.umask(before)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # it was 0600 whatever the umask


def test_a_second_rescore_of_the_same_output_is_told_who_writes_it(tiny_bundle, log_file, tmp_path):
    out = tmp_path / "busy.parquet"
    cmd = _rescore_cmd(tiny_bundle, log_file, out)
    proc = subprocess.Popen([sys.executable, "-c", SLOW, *cmd[3:]], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not list(parts_dir(out).glob("part-*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the first run ended too early"
            time.sleep(0.02)
        with pytest.raises(RescoreError, match=rf"busy.parquet' is already being written by pid {proc.pid} "
                                               r"\(another routerdb rescore\); wait for it to finish"):
            rescore(tiny_bundle, log_file, out, progress=False, batch_rows=50, part_rows=100)
    finally:
        proc.kill()
        proc.wait()
