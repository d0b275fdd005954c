"""The torch-free runtime: Router and the DuckDB functions on a tiny bundle."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import numpy as np
import pytest

import routerdb
from routerdb.router import Router, UnknownModelError


@pytest.fixture
def con(tiny_bundle):
    con = duckdb.connect()
    routerdb.register(con, tiny_bundle)
    return con


def test_runtime_does_not_import_torch(tiny_bundle):
    code = ("import sys, duckdb, routerdb, routerdb.duckdb, routerdb.cli;"
            f"con = duckdb.connect(); routerdb.register(con, {str(tiny_bundle)!r});"
            "con.sql(\"SELECT route_score('hi', model) FROM router_models\").fetchall();"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_router_models_table(con, tiny_bundle):
    rows = con.sql("SELECT model, len(embedding) FROM router_models ORDER BY model").fetchall()
    assert rows == [("chat", 32), ("coder", 32), ("weak", 32)]
    emb = con.execute("SELECT embedding FROM router_models WHERE model = 'coder'").fetchone()[0]
    np.testing.assert_allclose(emb, routerdb.Bundle.load(tiny_bundle).model_embeddings[1], rtol=1e-6)


def test_null_prompt_gives_null(con):
    rows = con.sql("SELECT route_score(NULL::VARCHAR, 'chat'), route_score('hi', NULL::VARCHAR)").fetchall()
    assert rows == [(None, None)]


def test_unknown_model_error_names_it_and_lists_known(con):
    with pytest.raises(duckdb.Error, match=r"unknown LLM 'gpt-9'; this router knows 3: chat, coder, weak"):
        con.sql("SELECT route_score('hello', 'gpt-9')").fetchall()


def test_register_twice_is_fine(con, tiny_bundle):
    routerdb.register(con, tiny_bundle)
    assert con.execute("SELECT count(*) FROM router_models").fetchone()[0] == 3
    assert con.execute("SELECT route_score('hello', 'chat')").fetchone()[0] is not None


def test_each_distinct_prompt_encoded_once_per_chunk(tiny_bundle):
    router = Router(tiny_bundle, cache_size=0)  # no cache: only the in-chunk deduplication
    con = duckdb.connect()
    routerdb.register(con, router)
    con.execute("CREATE TABLE rows AS SELECT 'prompt ' || (i % 7) AS prompt, "
                "['chat', 'coder', 'weak'][i % 3 + 1] AS model FROM range(210) t(i)")
    n = con.execute("SELECT count(route_score(prompt, model)) FROM rows").fetchone()[0]
    assert n == 210 and router.encoded_prompts == 7  # one chunk, 7 distinct prompts


def test_cross_join_encodes_each_prompt_once_with_cache(tiny_bundle):
    router = Router(tiny_bundle)
    con = duckdb.connect()
    routerdb.register(con, router)
    con.execute("CREATE TABLE logs AS SELECT 'prompt ' || (i % 7) AS prompt FROM range(70) t(i)")
    query = "SELECT count(route_score(prompt, model)) FROM logs CROSS JOIN router_models"
    n = con.execute(query).fetchone()[0]
    assert n == 210 and router.encoded_prompts == 7  # chunks hold one model each; the cache spans them


def test_score_matches_score_pairs_and_best(tiny_bundle):
    router = Router(tiny_bundle)
    prompts = ["Write SQL to count users", "Tell me a story", None]
    matrix = router.score(prompts)
    assert matrix.shape == (3, 3) and np.all(np.abs(matrix[:2]) <= 1)
    assert np.isnan(matrix[2]).all() and router.best(prompts)[2] is None  # missing prompt: like SQL NULL
    pairs = router.score_pairs(["Tell me a story"] * 3, ["weak", "chat", "coder"])
    np.testing.assert_allclose(pairs, matrix[1, [2, 0, 1]], atol=1e-6)
    assert router.best(prompts[:2]) == [router.models[int(j)] for j in matrix[:2].argmax(1)]
    with pytest.raises(UnknownModelError, match="unknown LLM 'nope'"):
        router.score(prompts, ["nope"])


def test_long_prompt_truncated_like_training(tiny_router, tiny_bundle):
    long = "Explain why the sky is blue. " * 500  # far beyond 128 tokens
    router = Router(tiny_bundle)
    assert router.tokenizer([long]).input_ids.shape == (1, 128)
    assert router.tokenizer.token_ids([long]) == tiny_router.tokenizer.token_ids([long])
    expected = np.stack(list(tiny_router.predict([long]).values()), axis=1)[0]
    np.testing.assert_allclose(router.score([long])[0], expected, atol=1e-4)


def test_prompt_vectors_are_what_the_head_reads(tiny_router, tiny_bundle):
    import torch

    prompts = ["Write a Python function that sorts a list.", "What is the capital of France?", None]
    got = Router(tiny_bundle).prompt_vectors(prompts)
    texts = [p or "" for p in prompts]
    with torch.no_grad():
        pooled = tiny_router.embed_prompts(texts)
        want = tiny_router.net.prompt_vector(pooled, tiny_router.features_tensor(texts)).cpu().numpy()
    assert got.shape == (3, 32 + 45)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert Router(tiny_bundle).prompt_vectors([]).shape[0] == 0


def test_prompt_vectors_of_a_bundle_without_them_say_re_export(tiny_bundle, tmp_path, monkeypatch):
    router = Router(tiny_bundle)
    monkeypatch.setattr(router, "_outputs", ["scores"])  # as a bundle exported before them
    with pytest.raises(routerdb.BundleError, match="not 'prompt_vectors' .* re-export the bundle"):
        router.prompt_vectors(["hi"])


def test_features_beside_tokenising_give_the_same_scores(tiny_bundle, monkeypatch):
    """From OVERLAP_MIN prompts up the features are computed on a worker thread while the prompts
    are tokenised; the scores are those of doing one after the other."""
    import routerdb.router as router_mod

    prompts = [f"Prompt {i}: what is {i} + {i * 7}? Answer in Python." for i in range(150)]
    router = Router(tiny_bundle, cache_size=0)
    assert "features" in router._inputs and len(prompts) >= router_mod.OVERLAP_MIN
    calls = []
    real = router_mod._feature_pool
    monkeypatch.setattr(router_mod, "_feature_pool", lambda: calls.append(1) or real())
    overlapped = router.score(prompts)
    assert calls == [1]
    monkeypatch.setattr(router_mod, "OVERLAP_MIN", 10**9)
    np.testing.assert_array_equal(overlapped, router.score(prompts))
    assert calls == [1]  # the second run computed them on the calling thread


def test_a_feature_error_on_the_worker_reaches_the_caller(tiny_bundle, monkeypatch):
    import routerdb.router as router_mod

    def broken(texts):
        raise ValueError("feature rules failed on a prompt")

    monkeypatch.setattr(router_mod, "compute_features", broken)
    with pytest.raises(ValueError, match="feature rules failed"):
        Router(tiny_bundle, cache_size=0).score([f"p{i}" for i in range(router_mod.OVERLAP_MIN)])


def test_the_feature_pool_is_made_anew_after_fork(monkeypatch):
    import routerdb.router as router_mod

    first = router_mod._feature_pool()
    assert router_mod._feature_pool() is first
    monkeypatch.setattr(router_mod.os, "getpid", lambda: -1)  # as in a forked child
    child = router_mod._feature_pool()
    assert child is not first and child.submit(lambda: 42).result(timeout=10) == 42
