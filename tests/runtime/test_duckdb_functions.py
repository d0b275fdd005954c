"""The SQL functions at speed: one encode per distinct prompt across DuckDB threads, a bounded cache
keyed by prompt text and bundle, the vectorised functions, and connections that share a database."""

from __future__ import annotations

import json
import shutil
import threading

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routerdb.bundle import Bundle, models_table, sha256_file
from routerdb.duckdb import RegisterError, has_functions, register
from routerdb.manifest import manifest_text
from routerdb.prompt_keys import digest
from routerdb.router import Router, shared_router

PROMPTS = [f"Question {i}: {topic}" for i in range(300) for topic in
           ("write a Python class for a queue", "what is the boiling point of water")][:300]


def cross_join(con, n: int | None = None) -> list[tuple]:
    return con.execute("SELECT p.prompt, m.model, route_score(p.prompt, m.model) AS s FROM prompts p "
                       "CROSS JOIN router_models m ORDER BY p.prompt, m.model").fetchall()


def connect(router: Router, prompts: list[str], threads: int = 2) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": threads})
    register(con, router)
    con.register("p", pa.table({"prompt": prompts}))
    con.execute("CREATE TABLE prompts AS SELECT * FROM p")
    return con


def test_cross_join_on_two_threads_encodes_each_prompt_once(tiny_bundle):
    """DuckDB calls the UDF from two threads at once with the same prompts (one chunk per LLM);
    the second waits for the first and finds the prompts cached instead of encoding them again."""
    router = Router(tiny_bundle)
    con = connect(router, PROMPTS, threads=2)
    rows = cross_join(con)
    assert router.encoded_prompts == len(PROMPTS)
    assert len(rows) == len(PROMPTS) * len(router.models)
    want = router.score(sorted(PROMPTS), sorted(router.models))
    np.testing.assert_allclose(np.array([r[2] for r in rows]).reshape(want.shape), want, atol=1e-6)
    cross_join(con)  # the repeated query: nothing encoded again
    assert router.encoded_prompts == len(PROMPTS)


def test_concurrent_callers_share_one_encode(tiny_bundle):
    router = Router(tiny_bundle)
    barrier = threading.Barrier(4)
    out = []

    def call():
        barrier.wait()
        out.append(router.score_all(PROMPTS[:64]))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert router.encoded_prompts == 64
    assert all(np.array_equal(o, out[0]) for o in out)


def test_cache_is_bounded_lru_keyed_by_text(tiny_bundle):
    router = Router(tiny_bundle, cache_size=3)
    router.score(["a", "b", "c"])
    router.score(["a"])  # a becomes the most recent
    router.score(["d"])  # evicts b, the least recent
    assert list(router._cache) == [digest(t) for t in ("c", "a", "d")]
    assert router.encoded_prompts == 4
    router.score(["b"])
    assert router.encoded_prompts == 5
    huge = "x" * 1_000_000
    router.score([huge])
    assert all(len(k) == 16 for k in router._cache)  # a key is a digest, whatever the prompt's size
    assert router.encoded_prompts == 6 and router.score([huge]) is not None and router.encoded_prompts == 6


def test_cache_is_per_bundle(tiny_bundle, tmp_path):
    """A bundle with other LLM vectors is another digest, another Router: no stale scores."""
    copy = tmp_path / "other"
    shutil.copytree(tiny_bundle, copy)
    b = Bundle.load(copy)
    pq.write_table(models_table(b.model_names, b.model_embeddings[::-1].copy()), copy / "models.parquet")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["models.parquet"]["sha256"] = sha256_file(copy / "models.parquet")
    (copy / "manifest.json").write_text(manifest_text(manifest))
    first, second = shared_router(tiny_bundle), shared_router(copy)
    assert first is not second and first is shared_router(tiny_bundle)
    a, b2 = first.score(PROMPTS[:3]), second.score(PROMPTS[:3])
    np.testing.assert_allclose(a, b2[:, ::-1], atol=1e-6)  # the reversed vectors, not the cached scores


def test_route_best_among_per_row_candidates(tiny_bundle):
    router = Router(tiny_bundle)
    con = connect(router, PROMPTS[:6])
    rows = con.execute("""
        SELECT prompt, route_best_among(prompt, CASE WHEN row_number() OVER (ORDER BY prompt) % 3 = 0
                                                    THEN ['weak'] ELSE ['coder', 'chat', NULL] END)
        FROM prompts ORDER BY prompt""").fetchall()
    for i, (prompt, best) in enumerate(rows, start=1):
        want = ["weak"] if i % 3 == 0 else ["coder", "chat"]
        assert best == router.best([prompt], want)[0]
    assert router.encoded_prompts == 6
    with pytest.raises(duckdb.Error, match="unknown LLM 'gpt-x'"):
        con.execute("SELECT route_best_among(prompt, ['gpt-x']) FROM prompts").fetchall()


def test_route_scores_is_a_map_of_every_llm(tiny_bundle):
    router = Router(tiny_bundle)
    con = connect(router, PROMPTS[:4])
    rows = con.execute("SELECT prompt, route_scores(prompt) FROM prompts ORDER BY prompt").fetchall()
    want = router.score([r[0] for r in rows])
    for (_, scores), expected in zip(rows, want, strict=True):
        assert list(scores) == list(router.models)
        np.testing.assert_allclose(list(scores.values()), expected, atol=1e-6)


def test_register_on_a_read_only_database(tiny_bundle, tmp_path):
    path = tmp_path / "logs.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE logs AS SELECT 'What is 2 + 2?' AS prompt")
    con = duckdb.connect(str(path), read_only=True)
    register(con, tiny_bundle)  # router_models is a TEMP table: allowed on a read-only file
    assert con.execute("SELECT route_best(prompt) FROM logs").fetchall()[0][0] in Router(tiny_bundle).models
    con.close()


def test_second_connection_to_one_file(tiny_bundle, tmp_path):
    """DuckDB shares Python functions per database: a second connection registering the same bundle
    changes nothing and gets the table; functions=False (earlier callers) does the same."""
    path = str(tmp_path / "shared.duckdb")
    first, second, third = duckdb.connect(path), duckdb.connect(path), duckdb.connect(path)
    register(first, tiny_bundle)
    assert has_functions(second)
    assert register(second, tiny_bundle) is shared_router(tiny_bundle)
    register(third, tiny_bundle, functions=False)
    for con in (second, third):
        assert con.execute("SELECT count(*) FROM router_models").fetchall()[0][0] == 3
        assert con.execute("SELECT route_best('hello')").fetchall()[0][0] is not None
    for con in (third, second, first):
        con.close()


# Closing the connection that registered the functions, then querying from another connection of
# the database, read freed memory (rc 139). In a subprocess: a crash must fail the test, not pytest.
CLOSE_THE_FIRST = """
import gc, sys, duckdb, routerdb
path, bundle = sys.argv[1], sys.argv[2]
first, second = duckdb.connect(path), duckdb.connect(path)
routerdb.register(first, bundle)
routerdb.register(second, bundle, functions=False)
plain = duckdb.connect(path)  # never registered: it sees the functions of the database all the same
first.close(); del first; gc.collect()
print(second.execute("SELECT route_score('hi', 'chat'), route_best('hi')").fetchall()[0][1])
print(plain.execute("SELECT route_best('hi')").fetchall()[0][0])
cursor = second.cursor(); del second; gc.collect()  # a cursor outlives its collected parent
print(cursor.execute("SELECT route_best('hi')").fetchall()[0][0])
"""


def test_closing_the_registering_connection_never_crashes_the_others(tiny_bundle, tmp_path):
    import subprocess
    import sys

    args = [str(tmp_path / "db.duckdb"), str(tiny_bundle)]
    done = subprocess.run([sys.executable, "-c", CLOSE_THE_FIRST, *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    best = shared_router(tiny_bundle).best(["hi"])[0]
    assert done.stdout.split() == [best] * 3


def test_cursors_see_what_register_gave_their_connection(tiny_bundle, tmp_path):
    """In memory: cursors see router_models; on a file: every connection and cursor sees
    routerdb.router_models (nothing is written into the file), and a registered cursor the short name."""
    con = duckdb.connect()
    register(con, tiny_bundle)
    assert con.cursor().execute("SELECT count(*) FROM router_models").fetchall()[0][0] == 3
    on_file = duckdb.connect(str(tmp_path / "f.duckdb"))
    register(on_file, tiny_bundle)
    cursor = on_file.cursor()
    assert cursor.execute("SELECT count(*) FROM routerdb.router_models").fetchall()[0][0] == 3
    assert cursor.execute("SELECT route_best('x')").fetchall()[0][0] in ("chat", "coder", "weak")
    register(cursor, tiny_bundle)
    assert cursor.execute("SELECT count(*) FROM router_models").fetchall()[0][0] == 3
    written = on_file.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'f'").fetchall()
    assert written == [(0,)]
    on_file.close()


@pytest.mark.parametrize("where", ["memory", "file"])
def test_register_never_drops_or_hides_a_users_table(tiny_bundle, tmp_path, where):
    con = duckdb.connect() if where == "memory" else duckdb.connect(str(tmp_path / "u.duckdb"))
    con.execute("CREATE TABLE router_models AS SELECT 'mine' AS note")
    with pytest.raises(RegisterError, match=r"already has a table named 'router_models' .* not made by "
                                            r"routerdb; registering would (replace|hide) it, so nothing was "
                                            r"changed. Pass table='llms'"):
        register(con, tiny_bundle)
    assert con.execute("SELECT * FROM router_models").fetchall() == [("mine",)]
    assert not has_functions(con)  # nothing was changed: no functions either
    register(con, tiny_bundle, table="llms")
    assert con.execute("SELECT count(*) FROM llms").fetchall()[0][0] == 3
    assert con.execute("SELECT * FROM router_models").fetchall() == [("mine",)]


def test_two_bundles_on_one_connection(tiny_bundle, tmp_path):
    copy = tmp_path / "reversed"
    shutil.copytree(tiny_bundle, copy)
    b = Bundle.load(copy)
    pq.write_table(models_table(b.model_names, b.model_embeddings[::-1].copy()), copy / "models.parquet")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["models.parquet"]["sha256"] = sha256_file(copy / "models.parquet")
    (copy / "manifest.json").write_text(manifest_text(manifest))
    con = duckdb.connect()
    first = register(con, tiny_bundle)
    second = register(con, copy, prefix="b_")
    got = con.execute("SELECT route_score('hi', 'chat'), b_route_score('hi', 'chat'), (SELECT count(*) "
                      "FROM b_router_models), route_best('hi'), b_route_best('hi')").fetchall()[0]
    assert got[0] == pytest.approx(float(first.score(["hi"], ["chat"])[0, 0]), abs=1e-6)
    assert got[1] == pytest.approx(float(second.score(["hi"], ["chat"])[0, 0]), abs=1e-6)
    assert got[0] != got[1] and got[2] == 3 and got[3:] == (first.best(["hi"])[0], second.best(["hi"])[0])
    other = duckdb.connect(str(tmp_path / "two.duckdb"))
    register(other, tiny_bundle)
    late = duckdb.connect(str(tmp_path / "two.duckdb"))
    busy = r"already serve bundle .*tiny, registered by another connection that still uses them; DuckDB"
    with pytest.raises(RegisterError, match=busy + r" lets only that connection replace .*prefix='b_'"):
        register(late, copy)
    register(other, copy)  # the connection that registered them may replace them
    replaced = late.execute("SELECT route_score('hi', 'chat')").fetchall()[0][0]
    assert replaced == pytest.approx(got[1], abs=1e-6)


def test_registering_again_costs_no_verification(tiny_bundle, monkeypatch):
    import routerdb.bundle as rb

    register(duckdb.connect(), tiny_bundle)
    calls = []
    monkeypatch.setattr(rb, "sha256_file", lambda path: calls.append(path))
    for _ in range(5):
        register(duckdb.connect(), tiny_bundle)
    assert calls == []  # the bundle's files were checked once, by the first register


def test_provider_and_threads_are_logged_and_settable(tiny_bundle, caplog, monkeypatch):
    import logging

    monkeypatch.setenv("ROUTERDB_THREADS", "1")
    with caplog.at_level(logging.INFO, logger="routerdb.router"):
        router = Router(tiny_bundle)
    assert router.threads == 1
    assert router.session.get_session_options().intra_op_num_threads == 1
    assert "on CPUExecutionProvider" in caplog.text and "1 intra-op threads" in caplog.text
    assert Router(tiny_bundle, threads=2).session.get_session_options().intra_op_num_threads == 2


# The first query over P distinct prompts in a fresh process; prints (RSS before, peak) in MiB.
FIRST_QUERY = """
import re, sys
import duckdb, pyarrow as pa
from routerdb.duckdb import register
from routerdb.router import Router
n = int(sys.argv[2])
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
register(con, Router(sys.argv[1], cache_size=1024))
prompts = [f"Prompt {i}: write about topic {i * 7 % 997} in detail." for i in range(n)]
con.register("p", pa.table({"prompt": prompts}))
con.execute("CREATE TABLE prompts AS SELECT * FROM p")
status = lambda key: int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read())[1]) // 1024
before = status("VmRSS")
con.execute("SELECT sum(route_score(prompt, model)) FROM prompts CROSS JOIN router_models").fetchall()
print(before, status("VmHWM"))
"""


def test_first_query_memory_is_flat_in_the_number_of_prompts(tiny_bundle):
    """4x the prompts: the query's peak memory must not grow with them (DuckDB streams 2,048-row
    chunks; the cache is bounded)."""
    import subprocess
    import sys

    growth = []
    for n in (2_048, 8_192):
        done = subprocess.run([sys.executable, "-c", FIRST_QUERY, str(tiny_bundle), str(n)], check=True,
                              capture_output=True, text=True)
        before, peak = map(int, done.stdout.split()[-2:])
        growth.append(peak - before)
    assert growth[1] - growth[0] < 15, f"peak growth {growth} MiB for 2,048 and 8,192 prompts"


def test_int8_copy_of_a_bundle(tiny_bundle, tmp_path, sample_path, capsys):
    from training.export import main as export_main

    out = tmp_path / "int8"
    assert export_main([str(tiny_bundle), str(out), "--quantize", "int8", "--prompts", str(sample_path),
                        "--verify-prompts", "16"]) == 0
    assert "wrote" in capsys.readouterr().out
    copy = Bundle.load(out)
    assert copy.manifest["graph"]["quantize"] == "int8"
    assert copy.manifest["quantization"]["prompts"] == 16
    gap = np.abs(Router(out).score(PROMPTS[:20]) - Router(tiny_bundle).score(PROMPTS[:20])).max()
    assert gap <= copy.manifest["quantization"]["max_abs_diff_vs_fp32"] + 0.05
    assert export_main([str(out), str(tmp_path / "again"), "--quantize", "int8"]) == 2
    assert "already quantised" in capsys.readouterr().err


def test_route_scores_keys_follow_router_models_after_an_llm_is_added_last(tiny_bundle, tmp_path):
    from routerdb.bundle import write_bundle
    from routerdb.rescore import rescore

    base = Bundle.load(tiny_bundle)
    order = [2, 0, 1]  # as add_model leaves it: a new LLM ('weak' here) after the sorted ones
    names = [base.model_names[i] for i in order]

    def files(tmp):
        out = {}
        for key, item in base.manifest["files"].items():
            if key != "models.parquet":
                shutil.copyfile(base.path / item["path"], tmp / key)
                out[key] = key
        pq.write_table(models_table(names, base.model_embeddings[order]), tmp / "models.parquet")
        return {**out, "models.parquet": "models.parquet"}

    manifest = {k: v for k, v in base.manifest.items()
                if k not in ("format", "format_version", "files", "manifest_sha256")}
    bundle = write_bundle(tmp_path / "reordered", manifest, files)
    con = duckdb.connect()
    register(con, bundle)
    listed = [r[0] for r in con.execute("SELECT model FROM router_models").fetchall()]
    keys = list(con.execute("SELECT map_keys(route_scores('Write a haiku.'))").fetchone()[0])
    assert keys == listed == sorted(names)  # keys followed the bundle's order: weak, chat, coder
    pq.write_table(pa.table({"prompt": ["Write a haiku."]}), tmp_path / "log.parquet")
    out = rescore(bundle, tmp_path / "log.parquet", tmp_path / "out.parquet", progress=False)
    assert [k for k, _ in pq.read_table(out)["route_scores"][0].as_py()] == listed
