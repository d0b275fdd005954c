"""Tests for training/data/read.py (with aliases.py, score_pairs.py, errors.py): readers,
validation messages, pairs, shipped data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.paths import REPO, SHARED_DATA
from training.data.aliases import load_aliases
from training.data.errors import DataError
from training.data.read import (
    PAIR_COLUMNS,
    PAIRS_SCHEMA,
    SCORES_SCHEMA,
    concat_pairs,
    detect_schema,
    load_pairs,
    load_scores,
    read_table,
)
from training.data.splits import model_counts

SAMPLE = REPO / "data" / "sample" / "llmrouter_sample.parquet"

PAIRWISE_ROWS = [
    {"prompt": "What is 2+2?", "model_a": "m1", "model_b": "m2", "winner": "model_a"},
    {"prompt": "Name a colour.", "model_a": "m2", "model_b": "m3", "winner": "model_b"},
    {"prompt": "Say hi, in French", "model_a": "m1", "model_b": "m3", "winner": "tie"},
    {"prompt": "What is 2+2?", "model_a": "m3", "model_b": "m1", "winner": "tie (bothbad)"},
]
SCORES_ROWS = [  # prompt p1: 3 models, p2: 2 models, p3: 1 model (no pair)
    {"prompt_id": "p1", "prompt": "one", "model": "c", "score": 1.0, "cost": 0.5},
    {"prompt_id": "p1", "prompt": "one", "model": "a", "score": 0.0, "cost": 0.1},
    {"prompt_id": "p1", "prompt": "one", "model": "b", "score": 1.0, "cost": None},
    {"prompt_id": "p2", "prompt": "two", "model": "b", "score": 0.25, "cost": 0.2},
    {"prompt_id": "p2", "prompt": "two", "model": "a", "score": 0.75, "cost": 0.1},
    {"prompt_id": "p3", "prompt": "three", "model": "a", "score": 0.5, "cost": 0.1},
]


def write(rows: list[dict], path: Path) -> Path:
    """Write rows as .parquet / .csv / .jsonl by the path's suffix."""
    frame = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sources(rows: list[dict], tmp_path: Path) -> dict[str, object]:
    """The same rows in every accepted input form; every file has the stem 'demo'."""
    forms: dict[str, object] = {"table": pa.Table.from_pylist(rows), "frame": pd.DataFrame(rows)}
    for suffix in (".parquet", ".csv", ".jsonl"):
        folder = tmp_path / suffix[1:]
        folder.mkdir()
        forms[suffix] = write(rows, folder / f"demo{suffix}")
    return forms


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("rows", [PAIRWISE_ROWS, SCORES_ROWS], ids=["pairwise", "scores"])
def test_every_input_form_gives_the_same_pairs(rows, tmp_path):
    forms = sources(rows, tmp_path)
    results = {k: load_pairs(v, source="demo").to_pylist() for k, v in forms.items()}
    expected = results.pop(".parquet")
    assert len(expected) == 4  # scores: 3 pairs for p1, 1 for p2, none for p3
    for form, got in results.items():
        assert got == expected, form


def test_read_table_names_files_and_tables(tmp_path):
    path = write(PAIRWISE_ROWS, tmp_path / "demo.csv")
    table, name = read_table(path)
    assert name == str(path) and table.num_rows == 4
    assert read_table(pa.Table.from_pylist(PAIRWISE_ROWS))[1] == "<table>"
    assert read_table(pd.DataFrame(PAIRWISE_ROWS))[1] == "<table>"
    with pytest.raises(TypeError, match="pass a file path"):
        read_table(42)
    with pytest.raises(FileNotFoundError, match="missing.parquet: no such file"):
        read_table(tmp_path / "missing.parquet")


def test_pairs_schema_and_defaults(tmp_path):
    pairs = load_pairs(write(PAIRWISE_ROWS, tmp_path / "arena.jsonl"))
    assert pairs.schema == PAIRS_SCHEMA
    assert set(pairs["source"].to_pylist()) == {"arena"}  # the file stem
    ids = pairs["prompt_id"].to_pylist()
    assert ids[0] == ids[3] != ids[1]  # a stable hash of the prompt text
    assert ids[0] == load_pairs(pa.Table.from_pylist(PAIRWISE_ROWS))["prompt_id"][0].as_py()
    assert pairs["score_a"].null_count == 4
    with_source = [dict(r, source="mt-bench") for r in PAIRWISE_ROWS]
    assert set(load_pairs(pa.Table.from_pylist(with_source), source="x")["source"].to_pylist()) == {
        "mt-bench"
    }
    assert set(load_pairs(pa.Table.from_pylist(PAIRWISE_ROWS))["source"].to_pylist()) == {"table"}


# ---------------------------------------------------------------- validation


def bad_case(rows, change: dict, row: int) -> list[dict]:
    rows = [dict(r) for r in rows]
    rows[row].update(change)
    return rows


BAD_INPUTS = [
    # (file name, rows, expected message pattern)
    (
        "bad.csv",
        [{k: v for k, v in r.items() if k != "winner"} for r in PAIRWISE_ROWS],
        r"bad\.csv: received columns \['model_a', 'model_b', 'prompt'\]; allowed: pairwise "
        r"columns .*\(missing \['winner'\]\) or scores columns .*\(missing \['model', 'score'\]\)",
    ),
    (
        "bad.csv",
        bad_case(PAIRWISE_ROWS, {"winner": "m1"}, 2),
        r"bad\.csv, row 2, column 'winner': received winner 'm1'; allowed: 'model_a', 'model_b', "
        r"'tie', 'tie \(bothbad\)'; fix: .*not the model's name",
    ),
    (
        "bad.jsonl",
        bad_case(PAIRWISE_ROWS, {"winner": None}, 1),
        r"bad\.jsonl, row 1, column 'winner': received winner null",
    ),
    (
        "bad.csv",
        bad_case(PAIRWISE_ROWS, {"prompt": "  \t "}, 3),
        r"bad\.csv, row 3, column 'prompt': received prompt '  \\t '; allowed: non-empty text",
    ),
    (
        "bad.parquet",
        bad_case(PAIRWISE_ROWS, {"prompt": ""}, 0),
        r"bad\.parquet, row 0, column 'prompt': received prompt ''",
    ),
    (
        "bad.jsonl",
        bad_case(PAIRWISE_ROWS, {"prompt": None}, 1),
        r"bad\.jsonl, row 1, column 'prompt': received prompt null",
    ),
    (
        "bad.jsonl",
        bad_case(PAIRWISE_ROWS, {"model_a": None}, 2),
        r"bad\.jsonl, row 2, column 'model_a': received model name null",
    ),
    (
        "bad.csv",
        bad_case(PAIRWISE_ROWS, {"model_b": "m1"}, 0),
        r"bad\.csv, row 0, column 'model_b': received the same model on both sides: 'm1'; "
        r"allowed: two different models",
    ),
    (
        "bad.csv",
        bad_case(SCORES_ROWS, {"score": "high"}, 4),
        r"bad\.csv, row 4, column 'score': received score 'high'; allowed: a finite number",
    ),
    (
        "bad.parquet",
        bad_case(SCORES_ROWS, {"score": float("nan")}, 2),
        r"bad\.parquet, row 2, column 'score': received score (nan|null); allowed: a finite",
    ),
    (
        "bad.jsonl",
        bad_case(SCORES_ROWS, {"score": None}, 5),
        r"bad\.jsonl, row 5, column 'score': received score null",
    ),
    (
        "bad.csv",
        bad_case(SCORES_ROWS, {"model": "c"}, 1),
        r"bad\.csv, row 1, column 'model': received a second score for prompt_id 'p1' and model "
        r"'c' \(first at row 0; 1 duplicates in all\); allowed: one row per \(prompt_id, model\)",
    ),
    (
        "bad.csv",
        [{"prompt_id": "p", "prompt": "x", "model": m, "score": 1} for m in ("a", "b")][:1],
        r"bad\.csv, column 'model': received one model per prompt",
    ),
]


@pytest.mark.parametrize("file_name, rows, pattern", BAD_INPUTS)
def test_bad_input_names_file_row_and_column(file_name, rows, pattern, tmp_path):
    path = write(rows, tmp_path / file_name)
    with pytest.raises(DataError, match=pattern):
        load_pairs(path)


def test_nan_and_infinite_numbers(tmp_path):
    table = pa.Table.from_pylist(SCORES_ROWS)
    nan_score = table.set_column(3, "score", pa.array([1.0, float("nan"), 0, 0, 0, 0]))
    pq.write_table(nan_score, tmp_path / "nan.parquet")
    with pytest.raises(DataError, match=r"nan\.parquet, row 1, column 'score': received score nan"):
        load_pairs(tmp_path / "nan.parquet")
    inf_cost = table.set_column(4, "cost", pa.array([1.0, 0, 0, float("inf"), 0, None]))
    with pytest.raises(DataError, match=r"<table>, row 3, column 'cost': received cost inf"):
        load_pairs(inf_cost)
    nan_cost = table.set_column(4, "cost", pa.array([float("nan")] * 6))
    assert load_scores(nan_cost)["cost"].null_count == 6  # a NaN cost is unknown, not an error


def test_empty_table_and_unknown_suffix(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("prompt,model_a,model_b,winner\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.csv: received a table with 0 rows"):
        load_pairs(path)
    with pytest.raises(DataError, match=r"data\.xlsx: received file suffix '\.xlsx'; allowed: "):
        load_pairs(tmp_path / "data.xlsx")
    json_array = tmp_path / "array.json"
    json_array.write_text(json.dumps(PAIRWISE_ROWS), encoding="utf-8")
    with pytest.raises(DataError, match=r"array\.json: received a file that cannot be parsed"):
        load_pairs(json_array)


def test_error_attributes_and_table_name():
    rows = bad_case(PAIRWISE_ROWS, {"winner": "A"}, 3)
    with pytest.raises(DataError, match=r"^<table>, row 3, column 'winner'") as info:
        load_pairs(pd.DataFrame(rows))
    assert (info.value.name, info.value.row, info.value.column) == ("<table>", 3, "winner")
    assert isinstance(info.value, ValueError)


def test_detect_schema():
    assert detect_schema(pa.Table.from_pylist(PAIRWISE_ROWS)) == "pairwise"
    assert detect_schema(pa.Table.from_pylist(SCORES_ROWS)) == "scores"
    with pytest.raises(DataError, match=r"^<table>: received columns \['Prompt'\].*case-sensitive"):
        detect_schema(pa.table({"Prompt": ["x"]}))


def test_load_scores_normalises_and_rejects_pairwise(tmp_path):
    frame = pd.DataFrame(SCORES_ROWS).rename(columns={"prompt_id": "id"}).drop(columns="id")
    frame["benchmark"] = "bench"
    scores = load_scores(frame)
    assert scores.schema == SCORES_SCHEMA
    assert scores["cost"].to_pylist() == [0.5, 0.1, None, 0.2, 0.1, 0.1]  # NaN -> null
    assert scores["source"].to_pylist() == ["bench"] * 6
    assert len(set(scores["prompt_id"].to_pylist())) == 3  # grouped by prompt text
    with pytest.raises(DataError, match=r"pairs\.csv: received pairwise data.*use load_pairs"):
        load_scores(write(PAIRWISE_ROWS, tmp_path / "pairs.csv"))


# ---------------------------------------------------------------- ties and aliases


def test_ties_are_kept_as_label_zero():
    pairs = load_pairs(pa.Table.from_pylist(PAIRWISE_ROWS))
    assert pairs["label"].to_pylist() == [1, -1, 0, 0]
    assert pairs["tie_kind"].to_pylist() == [None, None, "tie", "tie (bothbad)"]


ALIAS_FILE = {"about": "test", "aliases": {"gpt-4-0314": ["gpt4_0314", "GPT-4"], "m9": []}}


def test_load_aliases_forms(tmp_path):
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps(ALIAS_FILE), encoding="utf-8")
    expected = {"gpt4_0314": "gpt-4-0314", "GPT-4": "gpt-4-0314"}
    assert load_aliases(path) == expected
    assert load_aliases(ALIAS_FILE) == expected
    assert load_aliases(expected) == expected
    assert load_aliases(None) == {}
    with pytest.raises(DataError, match=r"<aliases>, column 'x': received two canonical names"):
        load_aliases({"aliases": {"a": ["x"], "b": ["x"]}})
    with pytest.raises(DataError, match=r"<aliases>, column 'a': received spellings 'x'"):
        load_aliases({"aliases": {"a": "x"}})
    with pytest.raises(DataError, match=r"<aliases>, column 'a': received value 3"):
        load_aliases({"a": 3})


def test_aliases_rename_models_before_the_self_comparison_check(tmp_path):
    rows = [
        {"prompt": "q", "model_a": "gpt4_0314", "model_b": "m2", "winner": "model_a"},
        {"prompt": "q", "model_a": "GPT-4", "model_b": "gpt-4-0314", "winner": "tie"},
    ]
    pairs = load_pairs(pa.Table.from_pylist(rows[:1]), aliases=ALIAS_FILE)
    assert pairs["model_a"].to_pylist() == ["gpt-4-0314"]
    with pytest.raises(DataError, match=r"<table>, row 1, column 'model_b': received the same"):
        load_pairs(pa.Table.from_pylist(rows), aliases=ALIAS_FILE)
    scores = [
        dict(r, model={"c": "GPT-4", "a": "gpt4_0314"}.get(r["model"], r["model"])) for r in SCORES_ROWS
    ]
    with pytest.raises(DataError, match=r"row 1, column 'model': received a second score"):
        load_pairs(pa.Table.from_pylist(scores), aliases=ALIAS_FILE)


# ---------------------------------------------------------------- scores -> pairs


def test_scores_become_every_unordered_pair():
    pairs = load_pairs(pa.Table.from_pylist(SCORES_ROWS), source="demo").to_pylist()
    got = [(p["prompt_id"], p["model_a"], p["model_b"], p["label"], p["tie_kind"]) for p in pairs]
    assert got == [
        ("p1", "a", "b", -1, None),
        ("p1", "a", "c", -1, None),
        ("p1", "b", "c", 0, "tie"),
        ("p2", "a", "b", 1, None),
    ]
    assert [(p["score_a"], p["score_b"], p["cost_a"], p["cost_b"]) for p in pairs] == [
        (0.0, 1.0, 0.1, None),
        (0.0, 1.0, 0.1, 0.5),
        (1.0, 1.0, None, 0.5),
        (0.75, 0.25, 0.1, 0.2),
    ]
    assert {p["source"] for p in pairs} == {"demo"} and pairs[3]["prompt"] == "two"


@pytest.mark.parametrize("n_models", [2, 3, 5, 9])
def test_n_models_give_n_choose_2_pairs_per_prompt(n_models):
    rng = np.random.default_rng(n_models)
    rows = [
        {"prompt": f"prompt {p}", "model": f"m{m}", "score": float(rng.integers(0, 3))}
        for p in range(4)
        for m in rng.permutation(n_models)
    ]
    pairs = load_pairs(pa.Table.from_pylist(rows)).to_pandas()
    assert pairs.groupby("prompt").size().tolist() == [n_models * (n_models - 1) // 2] * 4
    assert (pairs.model_a < pairs.model_b).all()
    assert (np.sign(pairs.score_a - pairs.score_b) == pairs.label).all()
    assert pairs.cost_a.isna().all()


# ---------------------------------------------------------------- concat


def test_concat_pairs_fills_optional_columns():
    pairwise = load_pairs(pa.Table.from_pylist(PAIRWISE_ROWS))
    scored = load_pairs(pa.Table.from_pylist(SCORES_ROWS))
    minimal = pa.table(
        {"prompt": ["z"], "model_a": ["x"], "model_b": ["y"], "label": pa.array([0], pa.int8())}
    ).append_column("source", pa.array(["hand"]))
    both = concat_pairs([pairwise, scored, minimal])
    assert both.schema == PAIRS_SCHEMA and both.num_rows == 9
    assert both["tie_kind"][-1].as_py() == "tie" and both["prompt_id"][-1].as_py().startswith("h")
    with pytest.raises(DataError, match=r"<table 1>: received columns .*\(missing \['source'\]\)"):
        concat_pairs([pairwise, minimal.drop_columns(["source"])])
    with pytest.raises(ValueError, match="no tables"):
        concat_pairs([])
    assert set(PAIR_COLUMNS) <= set(both.column_names)


# ---------------------------------------------------------------- shipped and shared data


def test_sample_loads():
    scores = load_scores(SAMPLE)
    assert scores.num_rows == 4500
    assert len(set(scores["prompt_id"].to_pylist())) == 500
    assert len(set(scores["source"].to_pylist())) == 14  # every benchmark sampled
    assert max(pc.utf8_length(scores["prompt"]).to_pylist()) <= 2000
    pairs = load_pairs(SAMPLE)
    assert pairs.num_rows == 500 * 36 and set(pairs["label"].to_pylist()) == {-1, 0, 1}
    assert SAMPLE.stat().st_size < 1_000_000
    assert pq.ParquetFile(SAMPLE).metadata.row_group(0).column(0).compression == "ZSTD"


# rows of pairs per shared file (scores files: sum over prompts of n(n-1)/2) and tie kinds
SHARED_EXPECTED = {
    "pairs_alpacaeval_llmjudge.parquet": (127_634, {"tie"}),
    "pairs_elobench_gpt4turbo.parquet": (13_384, {"tie", "tie (bothbad)"}),
    "pairs_pandalm_human.parquet": (999, {"tie"}),
    "scores_llmrouter_9model.parquet": (5_989 * 36, {"tie"}),
    "scores_routerbench_subset.parquet": (3_150 * 55 + 8 * 45, {"tie"}),
    "scores_routerdc_7model.parquet": (20_566 * 21, {"tie"}),
}


@pytest.fixture(scope="module")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing; check out ../shared/data")
    return SHARED_DATA


def test_shared_data_list_is_complete(shared_data):
    assert sorted(p.name for p in shared_data.glob("*.parquet")) == sorted(SHARED_EXPECTED)


@pytest.mark.parametrize("file_name", sorted(SHARED_EXPECTED))
def test_every_shared_file_loads(file_name, shared_data):
    aliases = load_aliases(shared_data / "model_aliases.json")
    pairs = load_pairs(shared_data / file_name, aliases=aliases)
    rows, tie_kinds = SHARED_EXPECTED[file_name]
    assert pairs.num_rows == rows
    assert set(pairs["label"].to_pylist()) == {-1, 0, 1}
    assert set(pairs["tie_kind"].drop_null().to_pylist()) == tie_kinds
    is_tie = pc.equal(pairs["label"], 0)
    assert pc.all(pc.equal(is_tie, pc.is_valid(pairs["tie_kind"]))).as_py()
    names = set(model_counts(pairs))
    assert not names & set(aliases)  # every listed spelling was renamed
    if file_name.startswith("scores_"):
        scores = load_scores(shared_data / file_name, aliases=aliases)
        assert scores.num_rows == pq.read_metadata(shared_data / file_name).num_rows


def test_a_row_number_says_that_rows_count_from_0(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("prompt,model,score\np,x,1\np,y,oops\n")
    with pytest.raises(DataError, match=r"s\.csv, row 1, column 'score': received score 'oops'.* \(rows "
                                        r"count from 0 in the order read; a CSV header is not a row\)$"):
        load_pairs(path)
