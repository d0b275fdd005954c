"""routerdb.sqlalchemy: the routing functions on every pooled connection, with real pools."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from routerdb.router import shared_router
from routerdb.sqlalchemy import create_engine, duckdb_connection

PROMPTS = ["Write a Python function that reverses a string.", "What is the capital of Chile?",
           "Solve 2x + 7 = 15.", "Write a haiku about the sea."]


@pytest.fixture()
def file_engine(tiny_bundle, tmp_path):
    engine = create_engine(f"duckdb:///{tmp_path / 'logs.duckdb'}", tiny_bundle, poolclass=QueuePool,
                           pool_size=2, max_overflow=2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE logs (id INTEGER, prompt VARCHAR)"))
        for i, prompt in enumerate(PROMPTS):
            conn.execute(text("INSERT INTO logs VALUES (:i, :p)"), {"i": i, "p": prompt})
    yield engine
    engine.dispose()


def expected(bundle) -> dict[str, str]:
    router = shared_router(bundle)
    return dict(zip(PROMPTS, router.best(PROMPTS), strict=True))


def test_every_pooled_connection_has_the_functions(tiny_bundle, file_engine):
    want = expected(tiny_bundle)
    conns = [file_engine.connect() for _ in range(4)]  # 2 pooled + 2 overflow: four DBAPI connections
    try:
        raw = {id(duckdb_connection(c.connection.driver_connection)) for c in conns}
        assert len(raw) == 4
        for conn in conns:
            rows = conn.execute(text("SELECT prompt, route_best(prompt) FROM logs ORDER BY id")).all()
            assert dict(rows) == want
            n = conn.execute(text("SELECT count(*) FROM router_models")).scalar_one()
            assert n == len(shared_router(tiny_bundle).models)
    finally:
        for conn in conns:
            conn.close()
    assert file_engine.pool.checkedin() == 2  # the two overflow connections were really closed


def test_connections_opened_later_and_after_dispose(tiny_bundle, file_engine):
    want = expected(tiny_bundle)
    with file_engine.connect() as conn:
        first = duckdb_connection(conn.connection.driver_connection)  # held: its id stays unique
    file_engine.dispose()  # the pool closes its connections; the next checkout opens a new one
    with file_engine.connect() as conn:
        assert duckdb_connection(conn.connection.driver_connection) is not first
        rows = conn.execute(text("SELECT prompt, route_best(prompt) FROM logs ORDER BY id")).all()
    assert dict(rows) == want


def test_concurrent_threads_share_one_router_and_its_cache(tiny_bundle, file_engine):
    router = shared_router(tiny_bundle)
    router.clear_cache()
    before = router.encoded_prompts
    query = text("SELECT id, route_score(prompt, m.model) FROM logs CROSS JOIN router_models m "
                 "ORDER BY id, m.model")
    results, errors = [], []

    def work():
        try:
            with file_engine.connect() as conn:
                results.append(conn.execute(query).all())
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == results[0] for r in results)
    assert router.encoded_prompts - before == len(PROMPTS)  # each prompt encoded once, pool-wide
    names = sorted(router.models)
    want = router.score(PROMPTS, names)
    got = np.array([s for _, s in results[0]]).reshape(len(PROMPTS), len(names))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_in_memory_url(tiny_bundle):
    engine = create_engine("duckdb:///:memory:", tiny_bundle)
    with engine.connect() as conn:
        best = conn.execute(text("SELECT route_best(:p)"), {"p": PROMPTS[0]}).scalar_one()
        scores = conn.execute(text("SELECT route_scores(:p)"), {"p": PROMPTS[0]}).scalar_one()
    assert best == expected(tiny_bundle)[PROMPTS[0]]
    assert set(dict(scores)) == set(shared_router(tiny_bundle).models)
    engine.dispose()


def test_a_non_duckdb_url_is_refused(tiny_bundle, tmp_path):
    with pytest.raises(ValueError, match=r"got a 'sqlite' URL .*Use a duckdb:/// URL"):
        create_engine(f"sqlite:///{tmp_path / 'x.db'}", tiny_bundle)


def test_a_bad_bundle_fails_at_create_engine(tmp_path):
    from routerdb.bundle import BundleError

    with pytest.raises(BundleError, match="not a directory"):
        create_engine("duckdb:///:memory:", tmp_path / "missing")
