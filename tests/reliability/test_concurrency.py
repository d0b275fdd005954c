"""Concurrency: many threads and DuckDB connections scoring through one bundle at once get exactly
the scores of one call at a time (the Router's prompt cache and ONNX Runtime session are shared).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pytest

import routerdb
from routerdb.router import Router, shared_router

THREADS = 8
# Prompts of many lengths (batches are sorted by length) and repeats (shared cache entries).
PROMPTS = [f"prompt {i}: " + "word " * (i % 37) + ("def f(): return 1" if i % 5 == 0 else "")
           for i in range(120)]
ATOL = 1e-5  # batch composition changes padding; scores agree to float32 rounding


@pytest.fixture(scope="module")
def expected(tiny_bundle) -> np.ndarray:
    """Scores [P, M] computed one prompt at a time, without a cache."""
    router = Router(tiny_bundle, cache_size=0)
    return np.concatenate([router.score([p]) for p in PROMPTS])


def _run_together(fn, n: int = THREADS) -> list:
    barrier = threading.Barrier(n)

    def start(i):
        barrier.wait()  # all threads enter the scorer at the same moment
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(start, range(n)))


def _order(i: int) -> list[int]:
    return list(np.random.default_rng(i).permutation(len(PROMPTS)))


def test_threads_share_one_router_with_a_tiny_cache(tiny_bundle, expected):
    # A cache of 8 entries for 120 prompts: threads evict each other's entries all the time.
    router = Router(tiny_bundle, cache_size=8)

    def work(i):
        rows = _order(i)
        return rows, router.score([PROMPTS[r] for r in rows])

    for rows, scores in _run_together(work):
        np.testing.assert_allclose(scores, expected[rows], atol=ATOL)
    assert len(router._cache) <= 8


def test_connections_in_threads_share_one_router(tiny_bundle, expected):
    router = Router(tiny_bundle, cache_size=100_000)
    models = list(router.models)

    def work(i):
        con = duckdb.connect()  # a connection (and database) per thread, one Router for all
        routerdb.register(con, router)
        con.execute("SET threads TO 2")
        con.execute("CREATE TABLE logs AS SELECT unnest(?) AS prompt", [[PROMPTS[r] for r in _order(i)]])
        rows = con.execute("SELECT prompt, model, route_score(prompt, model) FROM logs "
                           "CROSS JOIN router_models").fetchall()
        best = con.execute("SELECT prompt, route_best(prompt), route_scores(prompt) FROM logs").fetchall()
        con.close()
        return rows, best

    for rows, best in _run_together(work):
        assert len(rows) == len(PROMPTS) * len(models)
        for prompt, model, score in rows:
            want = float(expected[PROMPTS.index(prompt), models.index(model)])
            assert score == pytest.approx(want, abs=ATOL)
        for prompt, name, scores in best:
            want = expected[PROMPTS.index(prompt)]
            assert name == models[int(want.argmax())]
            np.testing.assert_allclose([scores[m] for m in models], want, atol=ATOL)
    assert router.encoded_prompts == len(PROMPTS)  # the encoder saw each prompt once across threads


def test_cursors_of_one_database_and_duckdb_threads(tiny_bundle, expected):
    con = duckdb.connect()
    routerdb.register(con, Router(tiny_bundle, cache_size=0))  # no cache: every call runs the model
    con.execute("SET threads TO 4")  # DuckDB itself calls the function from several threads
    con.execute("CREATE TABLE logs AS SELECT unnest(?) AS prompt", [PROMPTS * 40])  # 4,800 rows
    models = [m for (m,) in con.execute("SELECT model FROM router_models ORDER BY model").fetchall()]

    def work(i):
        cur = con.cursor()  # cursors: connections to the same database, registered functions included
        model = models[i % len(models)]
        return model, cur.execute("SELECT prompt, route_score(prompt, ?) FROM logs", [model]).fetchall()

    for model, rows in _run_together(work, 4):
        got = np.array([score for _, score in rows])
        want = expected[[PROMPTS.index(p) for p, _ in rows], models.index(model)]
        np.testing.assert_allclose(got, want, atol=ATOL)


def test_register_from_many_threads_builds_one_router(tiny_bundle):
    def work(i):
        con = duckdb.connect()
        router = routerdb.register(con, tiny_bundle)
        value = con.execute("SELECT route_score('same prompt', 'chat')").fetchone()[0]
        con.close()
        return router, value

    results = _run_together(work)
    assert len({id(router) for router, _ in results}) == 1
    assert results[0][0] is shared_router(tiny_bundle)
    assert len({value for _, value in results}) == 1
