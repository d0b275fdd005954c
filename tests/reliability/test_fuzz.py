"""Fuzzing with hypothesis: random strings, tables, specs and manifests never crash, hang or escape
as a library's exception; every score is finite and in [-1, 1] (NaN for a missing prompt).

Budget (docs/reliability.md): the examples per test are set in EXAMPLES below (about 1,100 in all,
~30 s on 2 CPU cores), derandomised so CI is repeatable. For a longer, random hunt run
`ROUTERDB_FUZZ_SCALE=20 pytest tests/reliability/test_fuzz.py` (new random examples each run).
A hang fails the test through the per-test timeout; a slow example (> SLOW s) fails it too.
"""

from __future__ import annotations

import json
import math
import os
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import routerdb
from routerdb.bundle import Bundle, BundleError
from routerdb.features import FEATURE_NAMES, compute_features
from routerdb.manifest import manifest_text
from routerdb.router import Router, UnknownModelError
from training.data.errors import DataError
from training.data.read import PAIRS_SCHEMA, load_pairs
from training.specs import FitSpec, SpecError, load_spec, parse_spec

SCALE = int(os.environ.get("ROUTERDB_FUZZ_SCALE", "1"))
EXAMPLES = {"features": 300, "router": 60, "sql": 60, "data": 250, "data_files": 100, "spec": 250,
            "spec_files": 60, "manifest": 60}
SLOW = 5.0  # seconds: one example slower than this counts as a hang


def budget(name: str, **kwargs):
    return settings(max_examples=EXAMPLES[name] * SCALE, deadline=None, derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large], **kwargs)


# Text with every kind of character: lone surrogates, NUL and control characters, RTL marks,
# combining marks, CJK, emoji, and the symbols the feature regexes look for.
any_char = st.characters(codec=None, exclude_categories=())
special = st.sampled_from(list("$\\{}[]()<>=+-*/^|&!?.,;:'\"`#@~_%\n\t\r \x00\x0b\u2028\u200b\u202e\ufeff"
                               "。！？√∑∫≤≥≠éßжعह中😀") + ["```", "\\frac", "www.", "://", "tl;dr"])
text = st.one_of(
    st.text(any_char, max_size=200),
    st.lists(st.one_of(special, st.text(max_size=8)), max_size=300).map("".join),
    st.builds(lambda unit, n: unit * n, st.one_of(special, st.text(min_size=1, max_size=5)),
              st.integers(1, 20_000)),  # long runs: the inputs that make regexes backtrack
)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    assert time.perf_counter() - start < SLOW, f"{fn.__name__} took over {SLOW} s"
    return out


# ------------------------------------------------------------------ prompt features


@pytest.mark.timeout(300)
@budget("features")
@given(prompts=st.lists(st.one_of(st.none(), text), max_size=4))
def test_features_are_finite_for_any_text(prompts):
    features = _timed(compute_features, prompts)
    assert features.shape == (len(prompts), len(FEATURE_NAMES)) and features.dtype == np.float32
    assert np.isfinite(features).all()


# ------------------------------------------------------------------ Router.score and the SQL functions


@pytest.fixture(scope="module")
def router(tiny_bundle):
    return Router(tiny_bundle, cache_size=64)


@pytest.mark.timeout(300)
@budget("router")
@given(prompts=st.lists(st.one_of(st.none(), text), min_size=1, max_size=6))
def test_router_scores_are_finite_and_in_range(router, prompts):
    scores = _timed(router.score, prompts)
    assert scores.shape == (len(prompts), len(router.models))
    present = np.array([p is not None for p in prompts])
    assert np.isnan(scores[~present]).all()  # a missing prompt: NaN, as NULL in SQL
    assert np.isfinite(scores[present]).all() and (np.abs(scores[present]) <= 1).all()


@pytest.fixture(scope="module")
def con(router):
    con = duckdb.connect()
    routerdb.register(con, router)
    return con


sql_text = st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=200),
                     text.filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s)))
model_name = st.one_of(st.none(), st.sampled_from(["chat", "coder", "weak"]), st.text(max_size=10))


@pytest.mark.timeout(300)
@budget("sql")
@given(rows=st.lists(st.tuples(sql_text, model_name), min_size=1, max_size=20))
def test_sql_functions_on_random_tables(con, router, rows):
    known = set(router.models)
    con.execute("CREATE OR REPLACE TEMP TABLE fuzz (prompt VARCHAR, model VARCHAR, "
                "candidates VARCHAR[])")
    con.executemany("INSERT INTO fuzz VALUES (?, ?, ?)", [(p, m, [m, "chat"]) for p, m in rows])
    expected = {p: router.score([p])[0] for p, _ in rows if p is not None}
    best = con.execute("SELECT prompt, route_best(prompt), route_scores(prompt) FROM fuzz").fetchall()
    for prompt, name, scores in best:
        if prompt is None:
            assert name is None and scores is None
            continue
        values = np.array([scores[m] for m in router.models])
        assert np.isfinite(values).all() and (np.abs(values) <= 1).all()
        np.testing.assert_allclose(values, expected[prompt], atol=1e-5)
    unknown = {m for p, m in rows if p is not None and m is not None} - known  # NULL prompt: NULL, unchecked
    query = "SELECT route_score(prompt, model), route_best_among(prompt, candidates) FROM fuzz"
    if unknown:
        with pytest.raises(duckdb.Error, match=r"unknown LLM"):
            con.execute(query).fetchall()
        return
    for (prompt, model), (score, among) in zip(rows, con.execute(query).fetchall(), strict=True):
        if prompt is None or model is None:
            assert score is None
        else:
            assert math.isfinite(score) and -1 <= score <= 1
        assert (among is None) == (prompt is None)


# ------------------------------------------------------------------ the data loader

cell = st.one_of(st.none(), text, st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                 st.booleans())
columns = st.sampled_from(["prompt", "model", "score", "model_a", "model_b", "winner", "prompt_id",
                           "cost", "source", "benchmark", "extra"])
winner_or_model = st.one_of(st.sampled_from(["model_a", "model_b", "tie", "tie (bothbad)", "m1", "m2"]), cell)


@st.composite
def tables(draw):
    names = draw(st.lists(columns, min_size=1, max_size=7, unique=True))
    if draw(st.booleans()):  # most tables look like one of the two schemas
        names = list(dict.fromkeys([*draw(st.sampled_from([["prompt", "model", "score"],
                                                           ["prompt", "model_a", "model_b", "winner"]])),
                                    *names]))
    n = draw(st.integers(0, 12))
    data = {}
    for name in names:
        # One Python type per column most of the time, as in real files; mixed types sometimes.
        values = st.sampled_from(["m1", "m2", "m3"]) if name.startswith("model") else winner_or_model
        kind = draw(st.sampled_from(["one", "mixed"]))
        pool = values if kind == "mixed" or name.startswith(("model", "winner")) else draw(
            st.sampled_from([text, st.floats(), st.integers(-5, 5), st.none()]))
        data[name] = draw(st.lists(st.one_of(st.none(), pool), min_size=n, max_size=n))
    return data


def _as_table(data: dict) -> pa.Table | None:
    try:
        return pa.table(data)
    except (pa.ArrowException, UnicodeEncodeError, OverflowError, TypeError):
        return None  # not representable in Arrow: no table reaches the loader


@pytest.mark.timeout(300)
@budget("data")
@given(data=tables())
def test_data_loader_on_random_tables(data):
    table = _as_table(data)
    if table is None:
        return
    try:
        pairs = _timed(load_pairs, table)
    except DataError:
        return
    assert pairs.schema == PAIRS_SCHEMA and pairs.num_rows > 0
    assert pairs["prompt"].null_count == 0 and set(pairs["label"].to_pylist()) <= {-1, 0, 1}


@pytest.mark.timeout(300)
@budget("data_files")
@given(raw=st.one_of(st.binary(max_size=400),
                     st.lists(st.text(max_size=30), max_size=10).map(lambda r: "\n".join(r).encode(
                         "utf-8", "surrogatepass"))),
       suffix=st.sampled_from([".csv", ".jsonl", ".parquet"]), header=st.booleans())
def test_data_loader_on_random_files(tmp_path_factory, raw, suffix, header):
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    prefix = {".csv": b"prompt,model,score\n", ".jsonl": b'{"prompt": "a", "model": "m", "score": 1}\n',
              ".parquet": b"PAR1"}[suffix]
    path.write_bytes((prefix if header else b"") + raw)
    try:
        _timed(load_pairs, path)
    except DataError:
        pass


# ------------------------------------------------------------------ the spec loader

json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
FIELDS = ["epochs", "batch_size", "loss.margin", "seed", "loss", "loss.kind", "loss.ties", "ties",
          "finetuning", "finetuning.kind", "finetuning.rank", "finetuning.lr", "encoder",
          "encoder.max_length", "head", "head.kind", "head.hidden_dims", "optimizer", "optimizer.betas",
          "schedule", "schedule.warmup_ratio", "export.opset", "data.train", "data.validation.fraction",
          "output.run_dir", "embedding_spec", "loss.source_weights", "unknown_key"]


def _put(spec: dict, dotted: str, value) -> dict:
    node = spec
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
    node[last] = value
    return spec


@pytest.mark.timeout(300)
@budget("spec")
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), json_value), max_size=4))
def test_spec_loader_on_random_values(edits):
    spec = {"data": {"train": ["x.parquet"]}, "output": {"run_dir": "r", "bundle_dir": "b"}}
    for field, value in edits:
        _put(spec, field, value)
    try:
        parsed = parse_spec(spec)
    except SpecError as exc:
        assert "problem(s)" in str(exc) and len(str(exc)) < 20_000
        return
    assert isinstance(parsed, FitSpec)
    floats = [v for v in json.loads(parsed.model_dump_json()).values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in floats)


@pytest.mark.timeout(300)
@budget("spec_files")
@given(raw=st.one_of(st.binary(max_size=300), json_value.map(lambda v: json.dumps(v).encode())))
def test_spec_loader_on_random_files(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_bytes(raw)
    with pytest.raises(SpecError):
        load_spec(path)


# ------------------------------------------------------------------ bundle manifests


@pytest.fixture(scope="module")
def manifest(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text())


@pytest.mark.timeout(300)
@budget("manifest")
@given(key=st.sampled_from(["format", "format_version", "files", "max_length", "tokenizer", "pooling",
                            "files.model.onnx", "files.models.parquet.path",
                            "files.tokenizer.json.sha256"]),
       value=json_value)
def test_bundle_load_on_random_manifests(tiny_bundle, tmp_path_factory, manifest, key, value):
    import shutil

    target = tmp_path_factory.mktemp("manifest") / "bundle"
    shutil.copytree(tiny_bundle, target)
    edited = json.loads(json.dumps(manifest))
    top, _, rest = key.partition(".")
    if rest:  # file entries: "model.onnx" holds a dot, so split at the known names
        name = next(n for n in edited["files"] if rest.startswith(n))
        field = rest[len(name) + 1:]
        if field:
            edited["files"][name][field] = value
        else:
            edited["files"][name] = value
    else:
        edited[top] = value
    (target / "manifest.json").write_text(manifest_text(edited))  # resealed: reach the field checks
    try:
        Bundle.load(target)
    except BundleError:
        pass
    try:
        Router(target).score(["hi"])
    except (BundleError, UnknownModelError):
        pass
