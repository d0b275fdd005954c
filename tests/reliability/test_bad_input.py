"""Bad input at every entry point: a clear error (what was received, what is allowed, how to fix it)
or a documented result, never a traceback from inside a library.

Each entry point has a list of cases: (input, what happens, the check). `docs/reliability.md`
holds the table these lists print (`python -m tests.reliability.test_bad_input`), and
`test_docs_table_is_current` fails when the two drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import routerdb
from routerdb.bundle import Bundle, BundleError
from routerdb.cli import main as cli_main
from routerdb.duckdb import RegisterError
from routerdb.manifest import manifest_text
from routerdb.router import Router, UnknownModelError
from tests.paths import REPO
from training.data.errors import DataError
from training.data.read import load_pairs
from training.specs import SpecError, load_spec

DOC = REPO / "docs" / "reliability.md"
MB = 1_000_000


@dataclass(frozen=True)
class Raises:
    """The call raises `kind` with a message matching `match` (a regex)."""

    kind: type[BaseException] | tuple[type[BaseException], ...]
    match: str


@dataclass(frozen=True)
class Returns:
    """The call returns a value for which `check(value)` holds (an assert inside, or True)."""

    check: Callable[[Any], Any]


@dataclass(frozen=True)
class Case:
    input: str  # the bad input, for the table
    result: str  # what happens, for the table
    call: Callable[[SimpleNamespace], Any]  # ctx -> the call's result
    expect: Raises | Returns


def _run(case: Case, ctx: SimpleNamespace) -> None:
    if isinstance(case.expect, Raises):
        with pytest.raises(case.expect.kind, match=case.expect.match):
            case.call(ctx)
    else:
        value = case.call(ctx)
        result = case.expect.check(value)
        assert result is None or bool(result), value  # None: the check asserted inside; numpy bools too


def _scores_in_range(matrix) -> bool:
    matrix = np.asarray(matrix, dtype=np.float64)
    return bool(np.isfinite(matrix).all() and (np.abs(matrix) <= 1).all())


# ------------------------------------------------------------------ data loader


def _scores(**columns) -> pa.Table:
    base = {"prompt": ["a", "a", "b", "b"], "model": ["m1", "m2", "m1", "m2"], "score": [1.0, 0.0, 0.5, 0.2]}
    return pa.table({**base, **columns})


def _pairwise(**columns) -> pa.Table:
    base = {"prompt": ["a", "b"], "model_a": ["m1", "m2"], "model_b": ["m2", "m1"],
            "winner": ["model_a", "tie"]}
    return pa.table({**base, **columns})


def _file(ctx, name: str, data: bytes) -> Path:
    path = ctx.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _parquet(ctx, name: str, table: pa.Table) -> Path:
    pq.write_table(table, ctx.tmp / name)
    return ctx.tmp / name


def _invalid_utf8_parquet(ctx) -> Path:
    """A Parquet string column holding bytes that are not UTF-8 (pyarrow writes it unchecked)."""
    values = pa.array([b"\xff\xfe", b"\xff\xfe", b"b", b"b"], pa.binary())
    prompt = pa.Array.from_buffers(pa.string(), len(values), values.buffers())
    return _parquet(ctx, "bad_utf8.parquet", _scores(prompt=prompt))


def _loads(n: int) -> Returns:
    return Returns(lambda pairs: pairs.num_rows == n)


ROW = r"<table>, row 1, column "
DATA = [
    Case("NULL prompt", "DataError: row, column 'prompt', 'received prompt null', allowed, fix",
         lambda c: load_pairs(_scores(prompt=["a", None, "b", "b"])),
         Raises(DataError, ROW + r"'prompt': received prompt null; allowed: non-empty text; fix: drop rows")),
    Case("empty prompt ''", "DataError naming row 1, column 'prompt'",
         lambda c: load_pairs(_scores(prompt=["a", "", "b", "b"])),
         Raises(DataError, ROW + r"'prompt': received prompt ''")),
    Case("whitespace-only prompt", "DataError (blank after trimming)",
         lambda c: load_pairs(_scores(prompt=["a", " \t\n", "b", "b"])),
         Raises(DataError, ROW + r"'prompt': received prompt ' \\t\\n'")),
    Case("1 MB prompt", "loaded as is (the tokenizer cuts it; features read the first 100k chars)",
         lambda c: load_pairs(_scores(prompt=["x" * MB] * 2 + ["b", "b"])), _loads(2)),
    Case("control characters / NUL in a prompt", "loaded as is (valid text)",
         lambda c: load_pairs(_scores(prompt=["\x00\x01\x1b[31m"] * 2 + ["b", "b"])), _loads(2)),
    Case("invalid UTF-8 in a CSV file", "DataError: 'bytes that are not valid UTF-8 text', fix: iconv",
         lambda c: load_pairs(_file(c, "bad.csv", b"prompt,model,score\n\xff\xfe,m1,1\n\xff\xfe,m2,0\n")),
         Raises(DataError, r"bad.csv, row 0, column 'prompt': received bytes that are not valid UTF-8")),
    Case("invalid UTF-8 in a JSON Lines file", "DataError naming row and column (was ArrowInvalid)",
         lambda c: load_pairs(_file(c, "bad.jsonl", b'{"prompt":"\xff","model":"m1","score":1}\n'
                                                    b'{"prompt":"\xff","model":"m2","score":0}\n')),
         Raises(DataError, r"bad.jsonl, row 0, column 'prompt': received bytes that are not valid UTF-8")),
    Case("invalid UTF-8 in a Parquet string column", "DataError naming row and column (was ArrowInvalid)",
         lambda c: load_pairs(_invalid_utf8_parquet(c)),
         Raises(DataError, r"row 0, column 'prompt': received bytes that are not valid UTF-8")),
    Case("NULL model name", "DataError naming row and column 'model'",
         lambda c: load_pairs(_scores(model=["m1", None, "m1", "m2"])),
         Raises(DataError, ROW + r"'model': received model name null")),
    Case("empty model name", "DataError naming row and column 'model'",
         lambda c: load_pairs(_scores(model=["m1", "", "m1", "m2"])),
         Raises(DataError, ROW + r"'model': received model name ''")),
    Case("NaN score", "DataError: 'allowed: a finite number (not null or NaN)'",
         lambda c: load_pairs(_scores(score=[1.0, float("nan"), 0.5, 0.2])),
         Raises(DataError, ROW + r"'score': received score nan; allowed: a finite number")),
    Case("infinite score", "DataError",
         lambda c: load_pairs(_scores(score=[1.0, float("inf"), 0.5, 0.2])),
         Raises(DataError, ROW + r"'score': received score inf")),
    Case("NULL score", "DataError",
         lambda c: load_pairs(_scores(score=[1.0, None, 0.5, 0.2])),
         Raises(DataError, ROW + r"'score': received score null")),
    Case("text in the score column", "DataError quoting the first value that is not a number",
         lambda c: load_pairs(_scores(score=["1", "x", "0.5", "0.2"])),
         Raises(DataError, ROW + r"'score': received score 'x'")),
    Case("integer prompts", "loaded: numbers are cast to text",
         lambda c: load_pairs(_scores(prompt=[1, 1, 2, 2])), _loads(2)),
    Case("list-typed prompt column", "DataError: 'values of type list<...>; allowed: text'",
         lambda c: load_pairs(_scores(prompt=[[1], [1], [2], [2]])),
         Raises(DataError, r"column 'prompt': received values of type list<item: int64>; allowed: text")),
    Case("list-typed score column", "DataError quoting the value",
         lambda c: load_pairs(_scores(score=[[1.0], [0.0], [1.0], [2.0]])),
         Raises(DataError, r"row 0, column 'score': received score \[1.0\]")),
    Case("all-NULL (null-typed) prompt column", "DataError: 'prompt null (and 3 more rows like it)'",
         lambda c: load_pairs(_scores(prompt=pa.nulls(4))),
         Raises(DataError, r"row 0, column 'prompt': received prompt null \(and 3 more rows like it\)")),
    Case("text in the cost column", "DataError",
         lambda c: load_pairs(_scores(cost=["a", "b", "c", "d"])),
         Raises(DataError, r"row 0, column 'cost': received cost 'a'; allowed: a finite number or null")),
    Case("NaN cost", "loaded: NaN/NULL cost means unknown",
         lambda c: load_pairs(_scores(cost=[float("nan")] * 4)), _loads(2)),
    Case("empty table (0 rows)", "DataError: 'a table with 0 rows; allowed: at least one row'",
         lambda c: load_pairs(_scores().slice(0, 0)),
         Raises(DataError, r"received a table with 0 rows; allowed: at least one row")),
    Case("CSV with a header only", "DataError: 0 rows",
         lambda c: load_pairs(_file(c, "header.csv", b"prompt,model,score\n")),
         Raises(DataError, r"header.csv: received a table with 0 rows")),
    Case("empty file (0 bytes)", "DataError: cannot be parsed",
         lambda c: load_pairs(_file(c, "empty.csv", b"")),
         Raises(DataError, r"empty.csv: received a file that cannot be parsed as csv")),
    Case("not Parquet at all", "DataError: cannot be parsed as parquet",
         lambda c: load_pairs(_file(c, "garbage.parquet", b"not parquet")),
         Raises(DataError, r"garbage.parquet: received a file that cannot be parsed as parquet")),
    Case("ragged CSV", "DataError quoting the parser's line",
         lambda c: load_pairs(_file(c, "ragged.csv", b"prompt,model,score\na,m1,1,extra\na,m2\n")),
         Raises(DataError, r"ragged.csv: received a file that cannot be parsed as csv .*Expected 3 columns")),
    Case("duplicate (prompt, model) score rows", "DataError naming both rows",
         lambda c: load_pairs(_scores(model=["m1", "m1", "m1", "m2"])),
         Raises(DataError, r"row 1, column 'model': received a second score for prompt_id .* \(first at")),
    Case("duplicate prompt_id for different prompts", "DataError: duplicates per (prompt_id, model)",
         lambda c: load_pairs(_scores(prompt_id=["p"] * 4)),
         Raises(DataError, r"received a second score for prompt_id 'p'")),
    Case("duplicate pairwise rows", "loaded: repeated votes are data, each row one comparison",
         lambda c: load_pairs(_pairwise(prompt=["a", "a"], model_a=["m1", "m1"], model_b=["m2", "m2"])),
         _loads(2)),
    Case("one model per prompt (no pairs)", "DataError: 'allowed: two or more models scored on a prompt'",
         lambda c: load_pairs(_scores(prompt=["a", "b", "c", "d"])),
         Raises(DataError, r"received one model per prompt; allowed: two or more models")),
    Case("winner not one of the four values", "DataError listing the allowed values",
         lambda c: load_pairs(_pairwise(winner=["m1", "tie"])),
         Raises(DataError, r"row 0, column 'winner': received winner 'm1'; allowed: 'model_a', 'model_b'")),
    Case("NULL winner", "DataError",
         lambda c: load_pairs(_pairwise(winner=["model_a", None])),
         Raises(DataError, r"row 1, column 'winner': received winner null")),
    Case("same model on both sides", "DataError",
         lambda c: load_pairs(_pairwise(model_b=["m1", "m1"])),
         Raises(DataError, r"column 'model_b': received the same model on both sides")),
    Case("neither schema's columns", "DataError listing both schemas' missing columns",
         lambda c: load_pairs(pa.table({"text": ["a"]})),
         Raises(DataError, r"received columns \['text'\]; allowed: pairwise columns")),
    Case("file that does not exist", "FileNotFoundError naming the path",
         lambda c: load_pairs(c.tmp / "missing.parquet"),
         Raises(FileNotFoundError, r"missing.parquet: no such file; pass the path of an existing data file")),
    Case("a directory / unknown suffix", "DataError listing the suffixes read",
         lambda c: load_pairs(c.tmp),
         Raises(DataError, r"received file suffix ''; allowed: .parquet, .csv")),
    Case("aliases file that does not exist", "DataError (was a bare FileNotFoundError)",
         lambda c: load_pairs(_scores(), aliases=c.tmp / "aliases.json"),
         Raises(DataError, r"aliases.json: received a path that cannot be read")),
    Case("aliases file with invalid JSON", "DataError (was JSONDecodeError)",
         lambda c: load_pairs(_scores(), aliases=_file(c, "a.json", b"{oops")),
         Raises(DataError, r"a.json: received text that is not valid JSON")),
    Case("aliases with a non-list of spellings", "DataError (was TypeError: 'int' object is not iterable)",
         lambda c: load_pairs(_scores(), aliases={"aliases": {"m1": 5}}),
         Raises(DataError, r"column 'm1': received spellings 5; allowed: a list of model names")),
    Case("a Python object that is no table", "TypeError naming what is accepted",
         lambda c: load_pairs(42),
         Raises(TypeError, r"read_table got int; pass a file path, a pyarrow.Table or a DataFrame")),
]


# ------------------------------------------------------------------ spec loader

SPEC = {"data": {"train": ["x.parquet"]}, "output": {"run_dir": "r", "bundle_dir": "b"}}


def _spec(ctx, text: str | bytes | None = None, **fields) -> Path:
    if text is None:
        text = json.dumps({**SPEC, **fields})
    path = ctx.tmp / "spec.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _spec_error(match: str) -> Raises:
    return Raises(SpecError, match)


SPECS = [
    Case("file that does not exist", "SpecError: 'cannot read spec ...: No such file or directory'",
         lambda c: load_spec(c.tmp / "nope.json"),
         _spec_error(r"cannot read spec .*No such file or directory")),
    Case("a directory", "SpecError: 'Is a directory'",
         lambda c: load_spec(c.tmp), _spec_error(r"cannot read spec .*Is a directory")),
    Case("empty file", "SpecError: not valid JSON at line 1 column 1",
         lambda c: load_spec(_spec(c, "")), _spec_error(r"not valid JSON at line 1 column 1")),
    Case("invalid UTF-8", "SpecError: not UTF-8 text (was UnicodeDecodeError)",
         lambda c: load_spec(_spec(c, b'{"epochs": "\xff"}')),
         _spec_error(r"not UTF-8 text \(invalid start byte")),
    Case("JSON nested 100,000 deep", "SpecError (was RecursionError)",
         lambda c: load_spec(_spec(c, "[" * 100_000 + "]" * 100_000)), _spec_error(r"nested too deeply")),
    Case("a JSON array instead of an object", "SpecError: 'a spec is a JSON object, got list'",
         lambda c: load_spec(_spec(c, "[]")), _spec_error(r"a spec is a JSON object, got list")),
    Case("a key given twice", "SpecError naming the key (json.loads kept the last silently)",
         lambda c: load_spec(_spec(c, '{"epochs": 1, "epochs": 2}')),
         _spec_error(r"key\(s\) \['epochs'\] appear more than once")),
    Case("unknown top-level key", "SpecError: 'Extra inputs are not permitted ... check its spelling'",
         lambda c: load_spec(_spec(c, learning_rate=1)),
         _spec_error(r"learning_rate: Extra inputs are not permitted \(got 1\). Remove it or check its")),
    Case("unknown nested key", "SpecError with the dotted path",
         lambda c: load_spec(_spec(c, finetuning={"kind": "lora", "rnak": 4})),
         _spec_error(r"finetuning\.lora\.rnak: Extra inputs")),
    Case("unknown kind", "SpecError listing the kinds",
         lambda c: load_spec(_spec(c, finetuning={"kind": "lorax"})),
         _spec_error(r"'lorax' found using 'kind' does not match any of the expected tags: 'lora'")),
    Case("wrong type (epochs: 'three')", "SpecError: 'Input should be a valid integer'",
         lambda c: load_spec(_spec(c, epochs="three")),
         _spec_error(r"epochs: Input should be a valid integer")),
    Case("wrong type (epochs: 2.5)", "SpecError: 'Input should be a valid integer (got 2.5)'",
         lambda c: load_spec(_spec(c, epochs=2.5)), _spec_error(r"epochs: Input should be a valid integer")),
    Case("numeric string (epochs: '3')", "SpecError: a valid integer (it was accepted as 3)",
         lambda c: load_spec(_spec(c, epochs="3")), _spec_error(r"epochs: Input should be a valid integer")),
    Case("a boolean for a count (epochs: true)", "SpecError: a valid integer (it ran 1 epoch)",
         lambda c: load_spec(_spec(c, epochs=True)),
         _spec_error(r"epochs: Input should be a valid integer \(got True\)")),
    Case("a boolean for a rate (margin: true)", "SpecError: 'a boolean, where a number is expected'",
         lambda c: load_spec(_spec(c, loss={"margin": True})),
         _spec_error(r"loss.margin_ranking.margin: Value error, got true, a boolean, where a number is "
                     r"expected")),
    Case("a float for a count (epochs: 1e9)", "SpecError: a valid integer (1e9 epochs were accepted)",
         lambda c: load_spec(_spec(c, epochs=1e9)), _spec_error(r"epochs: Input should be a valid integer")),
    Case("an absurd count (batch_size: 10^12)", "SpecError with the bound: 'less than or equal to 1048576'",
         lambda c: load_spec(_spec(c, batch_size=10**12)),
         _spec_error(r"batch_size: Input should be less than or equal to 1048576")),
    Case("an absurd count (epochs: 1,000,000)", "SpecError with the bound: 'less than or equal to 10000'",
         lambda c: load_spec(_spec(c, epochs=1_000_000)),
         _spec_error(r"epochs: Input should be less than or equal to 10000")),
    Case("data.train a string, not a list", "SpecError: 'Input should be a valid list'",
         lambda c: load_spec(_spec(c, data={"train": "x.parquet"})),
         _spec_error(r"data.train: .*valid list")),
    Case("empty path (output.run_dir '')", "SpecError (it meant the working directory)",
         lambda c: load_spec(_spec(c, output={"run_dir": "", "bundle_dir": "b"})),
         _spec_error(r"output.run_dir: String should have at least 1 character")),
    Case("same run_dir and bundle_dir", "SpecError: the bundle needs its own directory",
         lambda c: load_spec(_spec(c, output={"run_dir": "a", "bundle_dir": "a"})),
         _spec_error(r"same directory")),
    Case("impossible value (epochs: 0)", "SpecError: 'greater than or equal to 1'",
         lambda c: load_spec(_spec(c, epochs=0)),
         _spec_error(r"epochs: Input should be greater than or equal to 1")),
    Case("NaN literal (margin: NaN)", "SpecError: 'Input should be a finite number'",
         lambda c: load_spec(_spec(c, '{"loss": {"margin": NaN}, ' + json.dumps(SPEC)[1:])),
         _spec_error(r"loss.margin_ranking.margin: Input should be a finite number")),
    Case("Infinity (export.tolerance)", "SpecError: finite number (Infinity was accepted)",
         lambda c: load_spec(_spec(c, '{"export": {"tolerance": Infinity}, ' + json.dumps(SPEC)[1:])),
         _spec_error(r"export.tolerance: Input should be a finite number")),
    Case("hidden_dims [-5]", "SpecError (torch failed later inside nn.Linear)",
         lambda c: load_spec(_spec(c, head={"hidden_dims": [-5]})),
         _spec_error(r"head.mlp.hidden_dims.0: Input should be greater than or equal to 1")),
    Case("Adam betas outside [0, 1)", "SpecError (torch failed at the first step)",
         lambda c: load_spec(_spec(c, optimizer={"kind": "adamw", "betas": [2, 0.9]})),
         _spec_error(r"optimizer.adamw.betas.0: Input should be less than 1")),
    Case("negative seed / source weight", "SpecError (numpy refused the seed mid-run)",
         lambda c: load_spec(_spec(c, seed=-1, loss={"source_weights": {"a": -1}})),
         _spec_error(r"2 problem\(s\)(.|\n)*loss.margin_ranking.source_weights.a: .*greater than or equal to "
                     r"0(.|\n)*seed")),
    Case("opset 99", "SpecError: at most 20 (torch failed after training)",
         lambda c: load_spec(_spec(c, export={"opset": 99})),
         _spec_error(r"export.opset: Input should be less than or equal to 20")),
    Case("several problems at once", "one SpecError listing every problem",
         lambda c: load_spec(_spec(c, epochs=0, batch_size=0, foo=1)), _spec_error(r"3 problem\(s\)")),
    Case("a 1 MB string value", "SpecError quoting at most 100 characters of it",
         lambda c: load_spec(_spec(c, foo="a" * MB)),
         Raises(SpecError, r"foo: Extra inputs are not permitted \(got 'a{99}\)")),
]


# ------------------------------------------------------------------ SQL functions


def _sql(query: str):
    return lambda c: c.con.sql(query).fetchall()


def _one_score(rows) -> bool:
    (value,), = rows
    return value is not None and _scores_in_range([value])


def _duck_error(match: str) -> Raises:
    return Raises(duckdb.Error, match)


UDF_ERROR = r"Python exception occurred while executing the UDF: UnknownModelError: "
SQL = [
    Case("NULL prompt", "NULL (route_score, route_best, route_scores, route_best_among)",
         _sql("SELECT route_score(NULL, 'chat'), route_best(NULL), route_scores(NULL), "
              "route_best_among(NULL, ['chat'])"), Returns(lambda rows: rows == [(None, None, None, None)])),
    Case("empty prompt ''", "a score in [-1, 1] (the empty prompt is a prompt)",
         _sql("SELECT route_score('', 'chat')"), Returns(_one_score)),
    Case("whitespace-only prompt", "a score in [-1, 1]",
         _sql("SELECT route_score(' \t\n ', 'chat')"), Returns(_one_score)),
    Case("1 MB prompt", "a score in [-1, 1]; only the first max_length x 16 characters are tokenised",
         _sql("SELECT route_score(repeat('ab ', 350000), 'chat')"), Returns(_one_score)),
    Case("control characters and NUL", "a score in [-1, 1]",
         _sql("SELECT route_score(chr(0) || chr(1) || chr(27) || '[31m', 'chat')"), Returns(_one_score)),
    Case("invalid UTF-8 (a BLOB decoded)", "DuckDB's own conversion error, before the function runs",
         _sql("SELECT route_score(decode(from_hex('ff')), 'chat')"),
         _duck_error(r"could not convert blob to UTF8 string")),
    Case("unknown model name", "error naming it and listing the router's LLMs",
         _sql("SELECT route_score('hi', 'gpt-9')"),
         _duck_error(UDF_ERROR + r"unknown LLM 'gpt-9'; this router knows 3: chat, coder, weak")),
    Case("NULL model name", "NULL",
         _sql("SELECT route_score('hi', NULL)"), Returns(lambda rows: rows == [(None,)])),
    Case("empty model name ''", "error: unknown LLM ''",
         _sql("SELECT route_score('hi', '')"), _duck_error(r"unknown LLM ''")),
    Case("wrong argument type (INTEGER prompt)", "DuckDB binder error listing route_score(VARCHAR, VARCHAR)",
         _sql("SELECT route_score(42, 'chat')"),
         _duck_error(r"No function matches .*\n.*Candidate functions:\n\s*route_score\(VARCHAR, VARCHAR\)")),
    Case("wrong argument type (list prompt)", "DuckDB binder error",
         _sql("SELECT route_best([1, 2])"), _duck_error(r"No function matches the given name and argument")),
    Case("a string where a list is due", "DuckDB conversion error (VARCHAR -> VARCHAR[])",
         _sql("SELECT route_best_among('hi', 'chat')"),
         _duck_error(r"can't be cast to the destination type")),
    Case("empty candidate list", "NULL (was DuckDB's 'returned NULL with null_handling DEFAULT' error)",
         _sql("SELECT route_best_among('hi', []::VARCHAR[])"), Returns(lambda rows: rows == [(None,)])),
    Case("candidate list of NULLs / with NULLs", "NULLs skipped; all NULL -> NULL",
         _sql("SELECT route_best_among('hi', [NULL]::VARCHAR[]), route_best_among('hi', [NULL, 'weak'])"),
         Returns(lambda rows: rows == [(None, "weak")])),
    Case("unknown candidate", "error naming it and listing the LLMs",
         _sql("SELECT route_best_among('hi', ['nope'])"), _duck_error(UDF_ERROR + r"unknown LLM 'nope'")),
    Case("empty table", "no rows, the model is never run",
         _sql("SELECT route_score(p, 'chat') FROM (SELECT 'x' AS p WHERE false)"),
         Returns(lambda rows: rows == [])),
    Case("duplicate prompts / rows", "identical scores per copy, each prompt encoded once",
         _sql("SELECT DISTINCT route_score(p, 'chat') FROM (SELECT 'same' AS p FROM range(100))"),
         Returns(lambda rows: len(rows) == 1)),
    Case("NULLs mixed into a chunk", "NULL rows stay NULL, the others are scored",
         _sql("SELECT route_score(p, m) FROM (VALUES ('a', 'chat'), (NULL, 'chat'), ('b', NULL)) t(p, m)"),
         Returns(lambda rows: rows[1:] == [(None,), (None,)] and _scores_in_range([rows[0][0]]))),
]


# ------------------------------------------------------------------ Router.score

ROUTER = [
    Case("None prompt", "NaN scores and best() None, as NULL in SQL (was: the empty prompt's scores)",
         lambda c: (c.router.score([None, "a"]), c.router.best([None, "a"])),
         Returns(lambda r: np.isnan(r[0][0]).all() and _scores_in_range(r[0][1]) and r[1][0] is None)),
    Case("NaN / pandas.NA prompt (a DataFrame's missing text)", "NaN scores, like None",
         lambda c: c.router.score([float("nan"), _pandas_na(), "a"]),
         Returns(lambda m: np.isnan(m[:2]).all() and _scores_in_range(m[2]))),
    Case("a generator of prompts / of LLM names", "scored like the lists (was: len() of a generator)",
         lambda c: (c.router.score(p for p in ["a", "b"]), c.router.score(["a", "b"], (m for m in ["chat"]))),
         Returns(lambda r: r[0].shape == (2, 3) and np.array_equal(r[0][:, [0]], r[1]))),
    Case("an int instead of a list of prompts", "TypeError: 'pass a list' (was: 'int' is not iterable)",
         lambda c: c.router.score(42),
         Raises(TypeError, r"prompts must be a list .* got int 42; pass a list")),
    Case("score_pairs with more prompts than LLM names", "ValueError: one LLM name per prompt",
         lambda c: c.router.score_pairs(["a", "b"], ["chat"]),
         Raises(ValueError, r"2 prompts and 1 LLM names; allowed: one LLM name per prompt")),
    Case("empty prompt ''", "scores in [-1, 1]", lambda c: c.router.score([""]), Returns(_scores_in_range)),
    Case("whitespace-only prompt", "scores in [-1, 1]", lambda c: c.router.score([" \t\n "]),
         Returns(_scores_in_range)),
    Case("1 MB prompt",
         "scores in [-1, 1] in well under a second", lambda c: c.router.score(["ab " * 350_000]),
         Returns(_scores_in_range)),
    Case("control characters and NUL",
         "scores in [-1, 1]", lambda c: c.router.score(["\x00\x01\x1b[31m\x7f"]),
         Returns(_scores_in_range)),
    Case("lone surrogate (text that is not valid UTF-8)", "scores in [-1, 1]; the surrogate is replaced",
         lambda c: c.router.score(["\ud800abc"]), Returns(_scores_in_range)),
    Case("bytes instead of str", "TypeError: 'allowed: str or None ... decode it first' (was AttributeError)",
         lambda c: c.router.score([b"\xff\xfe"]),
         Raises(TypeError, r"prompt 0 is bytes b'\\xff\\xfe'; allowed: str, or None")),
    Case("int instead of str", "TypeError naming the row (was AttributeError)",
         lambda c: c.router.score(["ok", 5]), Raises(TypeError, r"prompt 1 is int 5; allowed: str, or None")),
    Case("a bare str instead of a list", "TypeError: 'wrap it in a list' (it scored each character)",
         lambda c: c.router.score("hello"),
         Raises(TypeError, r"got a single str 'hello'; wrap it in a list")),
    Case("empty list of prompts", "an empty [0, M] array", lambda c: c.router.score([]),
         Returns(lambda m: m.shape == (0, 3))),
    Case("unknown model name", "UnknownModelError listing the known LLMs",
         lambda c: c.router.score(["x"], ["nope"]),
         Raises(UnknownModelError, r"unknown LLM 'nope'; this router knows 3: chat, coder, weak")),
    Case("None as a model name", "UnknownModelError",
         lambda c: c.router.score(["x"], [None]), Raises(UnknownModelError, r"unknown LLM None")),
    Case("a bare str for models", "TypeError: wrap it in a list (it looked up each letter)",
         lambda c: c.router.score(["x"], "chat"), Raises(TypeError, r"models must be a list .* \['chat'\]")),
    Case("duplicate prompts and models", "one row / column per copy, each prompt encoded once",
         lambda c: c.router.score(["a", "a"], ["chat", "chat"]),
         Returns(lambda m: m.shape == (2, 2) and len(np.unique(m)) == 1)),
    Case("best() with no candidates", "ValueError (was numpy's 'argmax of an empty sequence')",
         lambda c: c.router.best(["x"], []), Raises(ValueError, r"empty list of candidate LLMs")),
]


# ------------------------------------------------------------------ routerdb rescore


def _rescore(ctx, table: pa.Table | bytes | None, *extra: str, name: str = "in.parquet",
             out: str = "out.parquet"):
    path = ctx.tmp / name
    if isinstance(table, pa.Table):
        pq.write_table(table, path)
    elif isinstance(table, bytes):
        path.write_bytes(table)
    before = sorted(p.name for p in ctx.tmp.iterdir())
    rc = cli_main(["rescore", str(ctx.bundle), str(path), str(ctx.tmp / out), "--no-progress", *extra])
    return rc, ctx.capsys.readouterr().err, ctx.tmp / out, before == sorted(p.name for p in ctx.tmp.iterdir())


def _rescore_error(match: str) -> Returns:
    def check(result):
        rc, err, _, unchanged = result
        assert rc == 2 and re.search(match, err), err
        assert "Traceback" not in err and unchanged  # nothing written, no parts left behind
    return Returns(check)


def _rescored(check_table: Callable[[pa.Table], bool]) -> Returns:
    def check(result):
        rc, err, out, _ = result
        assert rc == 0, err
        assert check_table(pq.read_table(out))
    return Returns(check)


RESCORE = [
    Case("NULL, empty, whitespace, control-character and 1 MB prompts", "scored; NULL prompt -> NULL outputs",
         lambda c: _rescore(c, pa.table({"prompt": ["a", None, "", " ", "\x00", "x" * MB]})),
         _rescored(lambda t: t["route_best"].null_count == 1 and t.num_rows == 6)),
    Case("empty table (0 rows)", "an empty output with the added columns",
         lambda c: _rescore(c, pa.table({"prompt": pa.array([], pa.string())})),
         _rescored(lambda t: t.num_rows == 0 and "route_scores" in t.column_names)),
    Case("duplicate rows", "every row kept, in order, same scores per copy",
         lambda c: _rescore(c, pa.table({"prompt": ["same"] * 5})),
         _rescored(lambda t: t.num_rows == 5 and len(set(t["route_best"].to_pylist())) == 1)),
    Case("prompt column of integers", "error: 'column 'prompt' is int64, not text; pass --cast-prompt'",
         lambda c: _rescore(c, pa.table({"prompt": [1, 2]})),
         _rescore_error(r"column 'prompt' is int64, not text; pass --cast-prompt")),
    Case("prompt column of integers, --cast-prompt", "scored as their text; the column written as it was",
         lambda c: _rescore(c, pa.table({"prompt": [1, 2]}), "--cast-prompt"),
         _rescored(lambda t: t["prompt"].to_pylist() == [1, 2] and t["route_best"].null_count == 0)),
    Case("prompt column of lists, --cast-prompt", "error: the type has no text form",
         lambda c: _rescore(c, pa.table({"prompt": [[1], [2]]}), "--cast-prompt"),
         _rescore_error(r"is list<\w+: int64>, which has no text form")),
    Case("pandas Categorical (dictionary-encoded) prompt column",
         "scored, the column kept dictionary-encoded (was refused: 'pass --prompt-column')",
         lambda c: _rescore(c, pa.table({"prompt": pa.array(["a", "b", "a"]).dictionary_encode()})),
         _rescored(lambda t: pa.types.is_dictionary(t["prompt"].type) and t["route_best"].null_count == 0)),
    Case("large_string prompt column", "scored",
         lambda c: _rescore(c, pa.table({"prompt": pa.array(["a", None], pa.large_string())})),
         _rescored(lambda t: t["route_best"].to_pylist()[1] is None and t["route_best"][0].is_valid)),
    Case("invalid UTF-8 in a Parquet prompt",
         "error naming file, row, row group and column; nothing left behind (was a UnicodeDecodeError "
         "traceback and a state.json)",
         lambda c: _rescore(c, pa.table({"prompt": _not_utf8(4)})),
         _rescore_error(r"in.parquet', row 1 \(row group 0, row 1 within it\), column 'prompt': bytes that "
                        r"are not valid UTF-8 .* --on-invalid-utf8 replace")),
    Case("invalid UTF-8 in a Parquet prompt, --on-invalid-utf8 replace",
         "scored with U+FFFD for the bad bytes; the column written as it was",
         lambda c: _rescore(c, pa.table({"prompt": _not_utf8(4)}), "--on-invalid-utf8", "replace"),
         _rescored(lambda t: t.num_rows == 4 and t["route_best"].null_count == 0)),
    Case("quoted empty CSV prompt \"\"", "kept as '' and scored, as from Parquet (was NULL, unscored)",
         lambda c: _rescore(c, b'prompt,n\n"",1\n,2\n', name="in.csv"),
         _rescored(lambda t: t["prompt"].to_pylist() == ["", None] and t["route_best"][0].is_valid)),
    Case("no prompt column", "error listing the columns, fix: --prompt-column",
         lambda c: _rescore(c, pa.table({"text": ["a"]})),
         _rescore_error(r"no column 'prompt' .*--prompt-column")),
    Case("input already has route_best", "error: rename or drop those columns",
         lambda c: _rescore(c, pa.table({"prompt": ["a"], "route_best": ["x"]})),
         _rescore_error(r"already has column\(s\) \['route_best'\]")),
    Case("unknown model in --models", "error listing the known LLMs",
         lambda c: _rescore(c, pa.table({"prompt": ["a"]}), "--models", "nope"),
         _rescore_error(r"unknown LLM 'nope'")),
    Case("input file that does not exist", "error naming the path",
         lambda c: _rescore(c, None, name="missing.parquet"),
         _rescore_error(r"no input file .*missing.parquet")),
    Case("input that is not Parquet", "error: cannot be read as Parquet (was ArrowInvalid)",
         lambda c: _rescore(c, b"xx"), _rescore_error(r"cannot be read")),
    Case("CSV that is not UTF-8", "the row and column, as for Parquet (was DuckDB's 'CSV Error on Line: 2')",
         lambda c: _rescore(c, b"prompt\n\xff\xfe\nok\n", name="in.csv"),
         _rescore_error(r"in.csv', row 0, column 'prompt': bytes that are not valid UTF-8")),
    Case("unsupported suffix", "error listing the formats read",
         lambda c: _rescore(c, b"a", name="in.txt"), _rescore_error(r"rescore reads .parquet, .csv")),
    Case("output path under a file", "error before any work: the path cannot be written",
         lambda c: _rescore(c, pa.table({"prompt": ["a"]}), out="in.parquet/out.parquet"),
         _rescore_error(r"cannot be written|Not a directory")),
    Case("output path that is a directory", "error before any work",
         lambda c: _rescore(c, pa.table({"prompt": ["a"]}), out="."), _rescore_error(r"is a directory")),
    Case("output path = input path", "error: would overwrite the input",
         lambda c: _rescore(c, pa.table({"prompt": ["a"]}), out="in.parquet"),
         _rescore_error(r"same file as the input")),
    Case("--batch-rows 0", "error: both must be at least 1",
         lambda c: _rescore(c, pa.table({"prompt": ["a"]}), "--batch-rows", "0"),
         _rescore_error(r"at least 1")),
    Case("output: an existing file rescore did not write", "error, the file untouched; --overwrite "
         "replaces it (it was overwritten silently)",
         lambda c: _rescore(c, pa.table({"prompt": ["a"]}), out=_file(c, "keep.parquet", b"mine").name),
         _rescore_error(r"keep.parquet' exists and was not written by routerdb rescore; refusing")),
    Case("output named .csv", "error before any work: rescore writes Parquet (it wrote Parquet bytes there)",
         lambda c: _rescore(c, pa.table({"prompt": ["a"]}), out="out.csv"),
         _rescore_error(r"out.csv' is named .csv; rescore writes Parquet")),
    Case("--models 'weak, coder' (spaces)", "spaces stripped, as in `routerdb score`",
         lambda c: _rescore(c, pa.table({"prompt": ["a"]}), "--models", "weak, coder"),
         _rescored(lambda t: [k for k, _ in t["route_scores"][0].as_py()] == ["weak", "coder"])),
]


def _not_utf8(n: int) -> pa.Array:
    """n prompts, row 1 of them bytes that are not UTF-8 (pyarrow writes such a string column)."""
    values = pa.array([b"ok", b"caf\xe9", b"ok", b"b"][:n], pa.binary())
    return pa.Array.from_buffers(pa.string(), len(values), values.buffers())


# ------------------------------------------------------------------ python -m training.fit


def _fit(ctx, spec_edit: Callable[[dict], Any] | None = None, *, raw: bytes | None = None):
    from training.fit import main as fit_main

    spec = {"data": {"train": [str(ctx.data)], "validation": {"fraction": 0.25, "seed": 0}},
            "output": {"run_dir": str(ctx.tmp / "run"), "bundle_dir": str(ctx.tmp / "bundle")},
            "encoder": {"name": str(ctx.encoder)}, "epochs": 1, "batch_size": 16, "progress": False}
    if spec_edit:
        spec_edit(spec)
    path = ctx.tmp / "spec.json"
    path.write_bytes(raw if raw is not None else json.dumps(spec).encode())
    rc = fit_main([str(path)])
    return rc, ctx.capsys.readouterr().err


def _fit_missing_spec(ctx):
    from training.fit import main as fit_main

    rc = fit_main([str(ctx.tmp / "nope.json")])
    return rc, ctx.capsys.readouterr().err


def _fit_error(rc: int, match: str) -> Returns:
    def check(result):
        got_rc, err = result
        assert got_rc == rc and re.search(match, err), err
        assert "Traceback" not in err
    return Returns(check)


def _set(path: str, value):
    def edit(spec):
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


BAD_JSONL = b'{"prompt":"\xff","model":"a","score":1}\n'
NAN_SCORES = _scores(score=[1.0, np.nan, 0, 0])
FIT = [
    Case("spec file that does not exist", "exit 2, 'error: cannot read spec'",
         _fit_missing_spec, _fit_error(2, r"cannot read spec")),
    Case("spec with invalid JSON", "exit 2, line and column of the problem",
         lambda c: _fit(c, raw=b'{"data": '), _fit_error(2, r"not valid JSON at line 1")),
    Case("spec with an unknown key and a wrong type", "exit 2, both problems listed",
         lambda c: _fit(c, lambda s: s.update(epochs="x", foo=1)),
         _fit_error(2, r"2 problem\(s\)(.|\n)*epochs(.|\n)*foo")),
    Case("data file that does not exist",
         "exit 2 before anything is written: 'data.train[0]: ... no such file' (was after creating run_dir)",
         lambda c: _fit(c, _set("data.train", [str(c.tmp / "missing.parquet")])),
         _fit_error(2, r"data.train\[0\]: .*missing.parquet: no such file")),
    Case("a directory given as data", "exit 2 before training: 'a directory, not a data file'",
         lambda c: _fit(c, _set("data.train", [str(c.tmp)])),
         _fit_error(2, r"data.train\[0\]: .* a directory, not a data file")),
    Case("data file of an unknown schema", "exit 2 before training, from the header: the columns it has",
         lambda c: _fit(c, _set("data.train", [str(_file(c, "q.csv", b"question,answer\nhi,yo\n"))])),
         _fit_error(2, r"data.train\[0\]: .*columns \['answer', 'question'\]")),
    Case("run_dir an existing directory that is not a run",
         "exit 2 before training; its files are left alone (training wrote among them)",
         lambda c: _fit(c, _set("output.run_dir", str(_file(c, "mine/notes.txt", b"x").parent))),
         _fit_error(2, r"output.run_dir .* is a non-empty directory that is not a routerdb run")),
    Case("data with invalid UTF-8", "exit 2 (bad input), DataError naming row and column (was exit 1)",
         lambda c: _fit(c, _set("data.train", [str(_file(c, "d.jsonl", BAD_JSONL))])),
         _fit_error(2, r"row 0, column 'prompt': received bytes that are not valid UTF-8")),
    Case("data with NaN scores", "exit 2 (bad input), DataError (was exit 1)",
         lambda c: _fit(c, _set("data.train", [str(_parquet(c, "nan.parquet", NAN_SCORES))])),
         _fit_error(2, r"received score nan")),
    Case("run_dir below a regular file",
         "exit 2 before training: 'output.run_dir ... cannot be written' (was a traceback)",
         lambda c: _fit(c, _set("output.run_dir", str(_file(c, "f", b"x") / "run"))),
         _fit_error(2, r"output.run_dir .* cannot be written: .* is a file, not a directory")),
    Case("bundle_dir below a regular file", "exit 2 before training (was after training, 'File exists')",
         lambda c: _fit(c, _set("output.bundle_dir", str(_file(c, "f", b"x") / "bundle"))),
         _fit_error(2, r"output.bundle_dir .* cannot be written")),
    Case("bundle_dir an existing directory that is not a bundle",
         "exit 2 before training; the directory is left alone (it was deleted)",
         lambda c: _fit(c, _set("output.bundle_dir", str(_file(c, "keep/precious.txt", b"x").parent))),
         _fit_error(2, r"non-empty directory that is not a routerdb bundle")),
    Case("encoder path that does not exist",
         "exit 2 before training, 'encoder directory ... does not exist' (was a hub error)",
         lambda c: _fit(c, _set("encoder.name", str(c.tmp / "no-encoder"))),
         _fit_error(2, r"encoder directory .*no-encoder' does not exist")),
    Case("encoder hub id not available offline",
         "exit 2 before training, names the encoder and the ways to provide it (was after loading the data)",
         lambda c: _fit(c, _set("encoder.name", "org/not-cached-anywhere")),
         _fit_error(2, r"'org/not-cached-anywhere' is not a local directory .* HF_HUB_OFFLINE is set")),
]


# ------------------------------------------------------------------ Bundle.load


def _bundle(ctx, edit: Callable[[Path, dict], Any]) -> Path:
    target = ctx.tmp / "bundle"
    shutil.copytree(ctx.bundle, target)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(target, manifest)
    if (target / "manifest.json").is_file() and not (target / "manifest.json").is_symlink():
        (target / "manifest.json").write_text(manifest_text(manifest))  # resealed: a well-formed edit
    return target


def _load(edit) -> Callable[[SimpleNamespace], Any]:
    return lambda c: Router(_bundle(c, edit))


def _rehash(target: Path, manifest: dict, name: str) -> None:
    import hashlib

    manifest["files"][name]["sha256"] = hashlib.sha256((target / name).read_bytes()).hexdigest()


def _replace_models(table: pa.Table):
    def edit(target, manifest):
        pq.write_table(table, target / "models.parquet")
        _rehash(target, manifest, "models.parquet")
    return edit


def _bundle_error(match: str) -> Raises:
    return Raises(BundleError, match)


EMB = [[0.1] * 32] * 3
NARROW = pa.table({"model": ["a", "b", "c"], "embedding": [[1.0] * 16] * 3})  # vectors the graph cannot take
BUNDLES = [
    Case("path that does not exist", "BundleError: 'it is not a directory ... pass that path'",
         lambda c: Bundle.load(c.tmp / "nothing"), _bundle_error(r"no bundle at .*it is not a directory")),
    Case("a directory without manifest.json", "BundleError",
         lambda c: Bundle.load(c.tmp), _bundle_error(r"has no manifest.json")),
    Case("manifest.json not JSON / invalid UTF-8", "BundleError: not valid JSON",
         lambda c: Bundle.load(_raw_manifest(c, b"\xff{")), _bundle_error(r"is not valid JSON")),
    Case("manifest nested 100,000 deep", "BundleError (was RecursionError)",
         lambda c: Bundle.load(_raw_manifest(c, b"[" * 100_000)), _bundle_error(r"is not valid JSON")),
    Case("a newer format version", "BundleError: 'Upgrade routerdb' for a newer version",
         _load(lambda t, m: m.update(format_version=99)),
         _bundle_error(r"format version 99, .* Upgrade routerdb")),
    Case("format_version true (wrong type)", "BundleError: the manifest is damaged",
         _load(lambda t, m: m.update(format_version=True)),
         _bundle_error(r"format version True; allowed: an integer")),
    Case("max_length -1", "BundleError (was KeyError / OverflowError)",
         _load(lambda t, m: m.update(max_length=-1)),
         _bundle_error(r"max_length -1 \(allowed: an integer from 1 to 1048576\)")),
    Case("pad_id of 10**20", "BundleError (was OverflowError from tokenizers / numpy)",
         _load(lambda t, m: m["tokenizer"].update(pad_id=10**20)), _bundle_error(r"tokenizer \{.*pad_id")),
    Case("an unknown truncation", "BundleError naming the truncations allowed",
         _load(lambda t, m: m["tokenizer"].update(truncation="middle")),
         _bundle_error(r"'truncation': one of head, tail, head_tail")),
    Case("tokenizer settings missing", "BundleError (was KeyError / ValueError)",
         _load(lambda t, m: m.pop("tokenizer")), _bundle_error(r"tokenizer None \(allowed")),
    Case("file path with a NUL byte", "BundleError (was ValueError: embedded null byte)",
         _load(lambda t, m: m["files"]["model.onnx"].update(path="x\x00y")),
         _bundle_error(r"has path 'x\\x00y'")),
    Case("a required file missing", "BundleError: the bundle is incomplete",
         _load(lambda t, m: (t / "tokenizer.json").unlink()), _bundle_error(r"'tokenizer.json' is missing")),
    Case("models.parquet without the model column", "BundleError listing what is allowed (was KeyError)",
         _load(_replace_models(pa.table({"name": ["a"]}))),
         _bundle_error(r"models.parquet: columns \['name'\]")),
    Case("models.parquet with NULL / repeated names", "BundleError",
         _load(_replace_models(pa.table({"model": ["a", "a", None], "embedding": EMB}))),
         _bundle_error(r"some missing, empty or repeated")),
    Case("models.parquet with ragged embeddings", "BundleError (was a numpy reshape error)",
         _load(_replace_models(pa.table({"model": ["a", "b"], "embedding": [[1.0] * 32, [1.0] * 31]}))),
         _bundle_error(r"embeddings of lengths \[31, 32\]")),
    Case("models.parquet with NaN embeddings", "BundleError (was accepted: every score NaN)",
         _load(_replace_models(pa.table({"model": ["a", "b", "c"], "embedding": [[float("nan")] * 32] * 3}))),
         _bundle_error(r"embeddings with NaN or infinite values")),
    Case("a file path outside the bundle (`../`)", "BundleError: refusing to read it (links: see below)",
         _load(lambda t, m: m["files"]["model.onnx"].update(path="../../etc/hostname")),
         _bundle_error(r"points outside the bundle")),
    Case("models.parquet with no rows", "BundleError (was an ONNX Runtime error at the first query)",
         _load(_replace_models(pa.table({"model": pa.array([], pa.string()),
                                         "embedding": pa.array([], pa.list_(pa.float32()))}))),
         _bundle_error(r"models.parquet: no rows")),
    Case("embedding width that does not fit the graph",
         "BundleError at load (was an ONNX Runtime error at the first query)",
         _load(lambda t, m: (_replace_models(NARROW)(t, m), m["models"].update(embedding_dim=16))),
         _bundle_error(r"model.onnx takes model_embeddings of width 32, but .* width 16")),
    Case("tokenizer.json that tokenizers cannot read (checksum updated)",
         "BundleError (was a bare Exception)",
         _load(lambda t, m: ((t / "tokenizer.json").write_text("{}"), _rehash(t, m, "tokenizer.json"))),
         _bundle_error(r"tokenizer.json cannot be loaded")),
    Case("model.onnx that is not ONNX (checksum updated)", "BundleError before ONNX Runtime sees it",
         _load(lambda t, m: ((t / "model.onnx").write_bytes(b"garbage"), _rehash(t, m, "model.onnx"))),
         _bundle_error(r"'model.onnx': .*protobuf")),
    Case("None instead of a path", "TypeError: 'allowed: the path of a bundle directory' (was pathlib's)",
         lambda c: Bundle.load(None), Raises(TypeError, r"got NoneType None; allowed: the path of a bundle")),
    Case("max_length hand-edited (128 -> 512), checksum not updated",
         "BundleError at load: 'edited or damaged after export' (was accepted; ONNX Runtime failed later)",
         lambda c: Router(_hand_edit(c, lambda m: (m.update(max_length=512),
                                                   m["tokenizer"].update(max_length=512)))),
         _bundle_error(r"do not match its manifest_sha256 .* edited or damaged after export")),
    Case("pad_id hand-edited, checksum not updated", "BundleError at load (was accepted)",
         lambda c: Router(_hand_edit(c, lambda m: m["tokenizer"].update(pad_id=3))),
         _bundle_error(r"edited or damaged after export")),
    Case("max_length beyond the graph's positions (checksum updated)",
         "BundleError at load, from a probe run of the graph (was an ONNX Runtime error at the first long "
         "prompt)",
         _load(lambda t, m: (m.update(max_length=200), m["tokenizer"].update(max_length=200))),
         _bundle_error(r"model.onnx cannot score prompts of max_length 200 tokens padded with pad_id 0 "
                       r"\(InvalidArgument")),
    Case("pad_id outside the tokenizer's vocabulary (checksum updated)",
         "BundleError at load (was an ONNX Runtime Gather error at the first query)",
         _load(lambda t, m: m["tokenizer"].update(pad_id=100_000)),
         _bundle_error(r"pad_id 100000 is not a token of tokenizer.json \(vocabulary of \d+\)")),
    Case("tokenizer.max_length differing from max_length", "BundleError naming both",
         _load(lambda t, m: m["tokenizer"].update(max_length=64)),
         _bundle_error(r"tokenizer max_length 64 but max_length 128")),
    Case("feature_stats.version changed", "BundleError: features version unknown (was silently accepted)",
         _load(lambda t, m: m["feature_stats"].update(version=2)),
         _bundle_error(r"feature_stats: got features version 2; this routerdb computes version 1")),
    Case("feature_names reordered", "BundleError (was silently accepted: features fed in the wrong order)",
         _load(lambda t, m: m.update(feature_names=m["feature_names"][::-1])),
         _bundle_error(r"feature_names .*allowed: the \d+ prompt features of this routerdb in their order")),
    Case("graph inputs the manifest does not declare", "BundleError naming the graph's inputs",
         _load(lambda t, m: m["graph"].update(inputs=["input_ids", "attention_mask"])),
         _bundle_error(r"model.onnx takes \[.*\] .* allowed: the inputs the manifest declares")),
    Case("LLM count in the manifest differs from models.parquet", "BundleError: files of different exports",
         _load(lambda t, m: m["models"].update(count=5)),
         _bundle_error(r"models \{.*\} \(allowed: the LLM table's own count 3")),
    Case("a bundle written before manifests had a checksum", "loads (fields still checked); see notes",
         lambda c: Router(_hand_edit(c, lambda m: m.pop("manifest_sha256"))),
         Returns(lambda r: r.models == ("chat", "coder", "weak"))),
    Case("Router(batch_size=-1) / batch_size=0",
         "ValueError naming the option (was: uninitialised memory as scores / a bare range() error)",
         lambda c: Router(c.bundle, batch_size=-1),
         Raises(ValueError, r"batch_size=-1 \(allowed: an integer >= 1")),
    Case("Router(cache_size=-5, threads='2')", "one ValueError listing both",
         lambda c: Router(c.bundle, cache_size=-5, threads="2"),
         Raises(ValueError, r"cache_size=-5 .*; threads='2' \(allowed")),
    Case("ROUTERDB_THREADS=two", "ValueError naming the variable (was int()'s traceback)",
         lambda c: _with_env("ROUTERDB_THREADS", "two", lambda: Router(c.bundle)),
         Raises(ValueError, r"environment variable ROUTERDB_THREADS='two'; allowed: a whole number")),
]


def _hand_edit(ctx, edit) -> Path:
    """A copy of the bundle whose manifest.json is edited by hand: its checksum not updated."""
    target = ctx.tmp / "edited"
    shutil.copytree(ctx.bundle, target)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def _with_env(name: str, value: str, call):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        return call()
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _pandas_na():
    import pandas  # the value a DataFrame holds for a missing string

    return pandas.NA


def _raw_manifest(ctx, data: bytes) -> Path:
    (ctx.tmp / "manifest.json").write_bytes(data)
    return ctx.tmp


# ------------------------------------------------------------------ routerdb.register


def _register(ctx, *, file: bool = False, setup: str = "", **options):
    """register() on a fresh connection (in memory, or a database file) after `setup` SQL ran."""
    con = duckdb.connect(str(ctx.tmp / "db.duckdb") if file else ":memory:")
    if setup:
        con.execute(setup)
    routerdb.register(con, options.pop("bundle", ctx.bundle), **options)
    return con


def _two_connections(ctx, other_bundle: bool, **options):
    """The functions registered by one connection of a file; a second registers (another bundle)."""
    first = _register(ctx, file=True)
    second = duckdb.connect(str(ctx.tmp / "db.duckdb"))
    bundle = _other_bundle(ctx) if other_bundle else ctx.bundle
    routerdb.register(second, bundle, **options)
    return first, second


def _other_bundle(ctx) -> Path:
    """A copy of the bundle with its LLM vectors reversed: another digest, other scores."""
    return _bundle(ctx, lambda t, m: _replace_models(pa.table({
        "model": ["chat", "coder", "weak"], "embedding": [[0.3] * 32, [0.2] * 32, [0.1] * 32]}))(t, m))


def _register_error(match: str) -> Raises:
    return Raises(RegisterError, match)


def _both_bundles(ctx):
    con = _register(ctx)
    routerdb.register(con, _other_bundle(ctx), prefix="b_")
    return con.execute("SELECT route_score('hi', 'chat'), b_route_score('hi', 'chat'), "
                       "(SELECT count(*) FROM b_router_models)").fetchall()[0]


REGISTER = [
    Case("the user's own router_models table (in memory)",
         "RegisterError, the table untouched; table='llms' names routerdb's (it was dropped silently)",
         lambda c: _register(c, setup="CREATE TABLE router_models AS SELECT 1 AS mine"),
         _register_error(r"already has a table named 'router_models' .* registering would replace it, so "
                         r"nothing was changed. Pass table='llms'")),
    Case("the user's own router_models table in a database file", "RegisterError (a TEMP table hid it)",
         lambda c: _register(c, file=True, setup="CREATE TABLE router_models AS SELECT 1 AS mine"),
         _register_error(r"registering would hide it")),
    Case("a second bundle on the same connection", "prefix='b_' serves both (the second replaced the first)",
         _both_bundles, Returns(lambda r: r[0] != r[1] and r[2] == 3)),
    Case("another bundle from a second connection of the database file",
         "RegisterError: another connection registered the functions; use a prefix",
         lambda c: _two_connections(c, other_bundle=True),
         _register_error(r"registered by another connection that still uses them; .*prefix='b_'")),
    Case("the same bundle from a second connection", "nothing changes, the table is there (it was refused)",
         lambda c: _two_connections(c, other_bundle=False)[1].execute("SELECT count(*) FROM router_models"
                                                                      ).fetchall(),
         Returns(lambda rows: rows == [(3,)])),
    Case("functions=False with another bundle than the functions'", "RegisterError: router_models would not "
         "match them", lambda c: _two_connections(c, other_bundle=True, functions=False),
         _register_error(r"serve bundle .*, not .*; its router_models would not match them")),
    Case("a SQLAlchemy connection instead of a DuckDB one", "RegisterError naming the way for SQLAlchemy "
         "(was AttributeError)", lambda c: routerdb.register(object(), c.bundle),
         _register_error(r"register got object .* allowed: a DuckDB connection .* routerdb.sqlalchemy")),
    Case("prefix 'b-'", "RegisterError naming what is allowed",
         lambda c: _register(c, prefix="b-"), _register_error(r"prefix 'b-'; allowed: '' or letters")),
    Case("a database named 'routerdb' attached by the user", "RegisterError: attach it under another name",
         lambda c: _register(c, setup=f"ATTACH '{c.tmp / 'x.duckdb'}' AS routerdb"),
         _register_error(r"has a database named 'routerdb' .* Attach yours under another name")),
]


# ------------------------------------------------------------------ routerdb score / sql


def _cli(ctx, *argv: str, cwd: Path | None = None):
    before = Path.cwd()
    os.chdir(cwd or ctx.tmp)
    try:
        rc = cli_main([argv[0], str(ctx.bundle), *argv[1:]])
    finally:
        os.chdir(before)
    out = ctx.capsys.readouterr()
    return rc, out.out, out.err


def _cli_says(rc: int, match: str, stream: str = "out") -> Returns:
    def check(result):
        got_rc, out, err = result
        assert got_rc == rc and re.search(match, out if stream == "out" else err), (out, err)
        assert "Traceback" not in err
    return Returns(check)


CLI = [
    Case("sql: SQL that mentions a .sql file", "run as SQL (it was read as a file name)",
         lambda c: _cli(c, "sql", "SELECT 41 + 1 AS answer -- see notes.sql"), _cli_says(0, r"42")),
    Case("sql: an existing file not named .sql", "read as a script (it was parsed as SQL)",
         lambda c: _cli(c, "sql", _file(c, "q.txt", b"SELECT 'scripted' AS s").name),
         _cli_says(0, r"scripted")),
    Case("sql: a file name that is no file", "exit 2: reads as a file name; -f FILE or -c SQL",
         lambda c: _cli(c, "sql", "q.sql"), _cli_says(2, r"'q.sql' is no file here .* -c", "err")),
    Case("sql: -f and -c together", "exit 2: exactly one script",
         lambda c: _cli(c, "sql", "-f", "a.sql", "-c", "SELECT 1"),
         _cli_says(2, r"got 2 scripts; allowed: exactly one", "err")),
    Case("sql: --set v=007", "the text '007' (it became the number 7); --set v:int=007 for 7",
         lambda c: _cli(c, "sql", "-c", "SELECT getvariable('v') || '!' AS v", "--set", "v=007"),
         _cli_says(0, r"007!")),
    Case("score: --models 'chat, coder'", "spaces stripped as in rescore (it was unknown LLM ' coder')",
         lambda c: _cli(c, "score", "hi", "--models", "chat, coder"), _cli_says(0, r"best (chat|coder)")),
    Case("score: --models 'chat,,coder'", "exit 2: an empty name between commas",
         lambda c: _cli(c, "score", "hi", "--models", "chat,,coder"),
         _cli_says(2, r"an empty name between commas", "err")),
    Case("score: ROUTERDB_THREADS=lots", "exit 2 naming the variable (it was a traceback)",
         lambda c: _with_env("ROUTERDB_THREADS", "lots", lambda: _cli(c, "score", "hi")),
         _cli_says(2, r"environment variable ROUTERDB_THREADS='lots'", "err")),
]


# ------------------------------------------------------------------ the tests

ENTRY_POINTS: dict[str, list[Case]] = {
    "data loader (`training.data.load_pairs`)": DATA,
    "spec loader (`training.specs.load_spec`)": SPECS,
    "SQL functions (`route_score`, `route_best`, `route_scores`, `route_best_among`)": SQL,
    "`Router.score` / `Router.best`": ROUTER,
    "`routerdb rescore`": RESCORE,
    "`python -m training.fit`": FIT,
    "`Bundle.load` / `Router(bundle)`": BUNDLES,
    "`routerdb.register(con, bundle)`": REGISTER,
    "`routerdb score` / `routerdb sql`": CLI,
}


@pytest.fixture
def ctx(tmp_path, tiny_bundle, capsys):
    return SimpleNamespace(tmp=tmp_path, bundle=tiny_bundle, capsys=capsys)


@pytest.fixture(scope="module")
def router(tiny_bundle):
    return Router(tiny_bundle)


@pytest.mark.parametrize("case", DATA, ids=lambda c: c.input)
def test_data_loader(case, ctx):
    _run(case, ctx)


@pytest.mark.parametrize("case", SPECS, ids=lambda c: c.input)
def test_spec_loader(case, ctx):
    _run(case, ctx)


@pytest.fixture(scope="module")
def con(tiny_bundle):
    con = duckdb.connect()
    routerdb.register(con, tiny_bundle)
    return con


@pytest.mark.parametrize("case", SQL, ids=lambda c: c.input)
def test_sql_functions(case, ctx, con):
    ctx.con = con
    _run(case, ctx)


@pytest.mark.parametrize("case", ROUTER, ids=lambda c: c.input)
def test_router_score(case, ctx, router):
    ctx.router = router
    _run(case, ctx)


@pytest.mark.parametrize("case", RESCORE, ids=lambda c: c.input)
def test_rescore(case, ctx):
    _run(case, ctx)


@pytest.mark.parametrize("case", FIT, ids=lambda c: c.input)
def test_fit(case, ctx, tiny_encoders, tmp_path):
    from tests import tiny_models

    ctx.encoder = tiny_encoders["bert"]
    ctx.data = tmp_path / "train.parquet"
    pq.write_table(tiny_models.synthetic_scores(12), ctx.data)
    _run(case, ctx)
    if case.input.startswith("bundle_dir an existing directory"):
        assert (tmp_path / "keep" / "precious.txt").read_bytes() == b"x"


@pytest.mark.parametrize("case", BUNDLES, ids=lambda c: c.input)
def test_bundle_load(case, ctx):
    _run(case, ctx)


@pytest.mark.parametrize("case", REGISTER, ids=lambda c: c.input)
def test_register(case, ctx):
    _run(case, ctx)


@pytest.mark.parametrize("case", CLI, ids=lambda c: c.input)
def test_command_line(case, ctx):
    _run(case, ctx)


def markdown_table() -> str:
    """The bad-input table of docs/reliability.md, from the cases above."""
    lines = []
    for entry, cases in ENTRY_POINTS.items():
        lines += [f"### {entry}: {len(cases)} bad inputs", "", "| bad input | what happens |", "|---|---|"]
        lines += [f"| {c.input} | {c.result} |" for c in cases]
        lines.append("")
    return "\n".join(lines)


def test_docs_table_is_current():
    text = DOC.read_text(encoding="utf-8")
    for entry, cases in ENTRY_POINTS.items():
        assert f"| {entry} | {len(cases)} |" in text, f"docs/reliability.md: count of {entry}"
    assert markdown_table() in text, (
        "docs/reliability.md is out of date with the cases in this file; regenerate its table with "
        "`python -m tests.reliability.test_bad_input` and paste it between the markers")


if __name__ == "__main__":
    print(markdown_table())
