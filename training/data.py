"""Read LLM comparison data and validate it (no torch).

Two input schemas are accepted (``detect_schema`` tells them apart by their columns):

* **pairwise**: ``prompt``, ``model_a``, ``model_b``, ``winner`` in {``model_a``, ``model_b``,
  ``tie``, ``tie (bothbad)``}; optional ``prompt_id``, ``source``, ``response_a``, ``response_b``.
* **scores** (long, one row per prompt and model): ``prompt``, ``model``, ``score``; optional
  ``prompt_id`` (rows are grouped by the exact prompt text when absent), ``cost``, ``source`` or
  ``benchmark``, ``response`` (the LLM's answer; the LLM embedding model reads it when present).
  Every unordered pair of a prompt's models becomes one comparison.

``load_pairs`` turns either into one pairs table (``PAIRS_SCHEMA``): ``label`` is +1 when
``model_a`` is better, -1 when ``model_b`` is better, 0 for a tie. Ties: "tie" and
"tie (bothbad)" are both kept as label 0; the trainer excludes label 0 from the margin ranking
loss and from pairwise accuracy; ``tie_kind`` is kept for analysis.

Model names are mapped through the aliases (``load_aliases``) before any check. Every problem
raises ``DataError`` naming the file (``<table>`` for in-memory data), the 0-based row in the
order read (a CSV header is not a row), the column, what was received, what is allowed and the
fix. Prompt-disjoint splitting and near-duplicate grouping are in `training.splits`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ("prompt", "model_a", "model_b", "label", "source")
PAIRWISE_REQUIRED = ("prompt", "model_a", "model_b", "winner")
SCORES_REQUIRED = ("prompt", "model", "score")
WINNER_LABELS = {"model_a": 1, "model_b": -1, "tie": 0, "tie (bothbad)": 0}
TABLE_NAME = "<table>"  # display name of in-memory data in error messages
SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson", ".json")

PAIRS_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("label", pa.int8()),  # +1 model_a better, -1 model_b better, 0 tie
        ("tie_kind", pa.string()),  # null, "tie" or "tie (bothbad)"
        ("source", pa.string()),
        ("prompt_id", pa.string()),
        ("score_a", pa.float64()),  # scores data only, else null
        ("score_b", pa.float64()),
        ("cost_a", pa.float64()),
        ("cost_b", pa.float64()),
        ("response_a", pa.string()),  # the LLMs' answers where the data has them, else null
        ("response_b", pa.string()),
    ]
)
SCORES_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("model", pa.string()),
        ("score", pa.float64()),
        ("cost", pa.float64()),
        ("source", pa.string()),
        ("response", pa.string()),  # null where the data has no responses
    ]
)


class DataError(ValueError):
    """Bad input data: the message names where (file, 0-based row, column), what was received,
    what is allowed and how to fix it. ``name``, ``row`` and ``column`` are kept as attributes."""

    def __init__(
        self, message: str, *, name: str | None = None, row: int | None = None, column: str | None = None
    ):
        super().__init__(message)
        self.name, self.row, self.column = name, row, column


def _error(name, *, row=None, column=None, received: str, allowed: str, fix: str) -> DataError:
    where = name + (f", row {row}" if row is not None else "")
    where += f", column {column!r}" if column is not None else ""
    message = f"{where}: received {received}; allowed: {allowed}; fix: {fix}"
    return DataError(message, name=name, row=row, column=column)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _raise_first(bad, name, column, *, what, allowed: str, fix: str, values=None) -> None:
    """Raise for the first True row of ``bad`` (a boolean array, null counted as bad)."""
    if isinstance(bad, (pa.Array, pa.ChunkedArray)):
        bad = pc.fill_null(bad, True).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(bad)
    if rows.size == 0:
        return
    row = int(rows[0])
    received = what if values is None else f"{what} {_show(values[row].as_py())}"
    if rows.size > 1:
        received += f" (and {rows.size - 1} more rows like it)"
    raise _error(name, row=row, column=column, received=received, allowed=allowed, fix=fix)


# ---------------------------------------------------------------- reading


def read_table(src) -> tuple[pa.Table, str]:
    """Read a path (.parquet, .csv, .jsonl/.ndjson/.json as JSON Lines), a ``pa.Table`` or a pandas
    DataFrame; return the table and a display name for error messages."""
    if isinstance(src, pa.Table):
        return src, TABLE_NAME
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(src, pandas.DataFrame):
        try:
            return pa.Table.from_pandas(src, preserve_index=False), TABLE_NAME
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError) as exc:
            raise _error(
                TABLE_NAME,
                received=f"a DataFrame Arrow cannot convert ({exc})",
                allowed="columns of one type each (text, numbers)",
                fix="convert mixed-type columns, e.g. df[col].astype(str)",
            ) from exc
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        return _read_file(path, str(path)), str(path)
    raise TypeError(f"read_table got {type(src).__name__}; pass a file path, a pyarrow.Table or a DataFrame")


def _read_file(path: Path, name: str) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise _error(
            name,
            received=f"file suffix {suffix!r}",
            allowed=", ".join(SUFFIXES),
            fix="save the data as Parquet, CSV or JSON Lines with one of these suffixes",
        )
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file; pass the path of an existing data file")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            options = pacsv.ParseOptions(newlines_in_values=True)
            return pacsv.read_csv(path, parse_options=options)
        import pyarrow.json as pajson

        return pajson.read_json(path, read_options=pajson.ReadOptions(block_size=1 << 24))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _error(
            name,
            received=f"a file that cannot be parsed as {suffix[1:]} ({exc})",
            allowed="Parquet, CSV with a header row, or JSON Lines (one object per line)",
            fix="check the file format; write .json files as one JSON object per line",
        ) from exc


def detect_schema(table: pa.Table, *, name: str = TABLE_NAME) -> Literal["pairwise", "scores"]:
    """``"pairwise"`` or ``"scores"``, by the columns present; DataError if neither matches."""
    found = set(table.column_names)
    if set(PAIRWISE_REQUIRED) <= found:
        return "pairwise"
    if set(SCORES_REQUIRED) <= found:
        return "scores"
    missing_p = [c for c in PAIRWISE_REQUIRED if c not in found]
    missing_s = [c for c in SCORES_REQUIRED if c not in found]
    raise _error(
        name,
        received=f"columns {sorted(found)}",
        allowed=(
            f"pairwise columns {list(PAIRWISE_REQUIRED)} (missing {missing_p}) or scores columns "
            f"{list(SCORES_REQUIRED)} (missing {missing_s}); optional: prompt_id, source, "
            "benchmark, cost"
        ),
        fix="rename or add the missing columns (names are case-sensitive)",
    )


def load_aliases(spec: str | os.PathLike | Mapping | None = None) -> dict[str, str]:
    """Spelling -> canonical model name, from a model_aliases.json path or mapping
    (``{"aliases": {canonical: [spellings]}}``) or a plain ``{spelling: canonical}`` mapping."""
    if spec is None:
        return {}
    name = "<aliases>"
    if isinstance(spec, (str, os.PathLike)):
        name = str(spec)
        spec = _read_aliases_file(Path(spec))
    if not isinstance(spec, Mapping):
        raise TypeError(f"aliases must be a path or a mapping, got {type(spec).__name__}")
    if isinstance(spec.get("aliases"), Mapping):
        return _grouped_aliases(spec["aliases"], name)
    bad = [k for k, v in spec.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise _error(
            name,
            column=bad[0],
            received=f"value {_show(spec[bad[0]])}",
            allowed='{"aliases": {canonical: [spellings]}} or {spelling: canonical} with text',
            fix="write the aliases in one of these two forms",
        )
    return {k: v for k, v in spec.items() if k != v}


def _read_aliases_file(path: Path) -> Any:
    allowed = 'a JSON file {"aliases": {canonical: [spellings]}} or {spelling: canonical}'
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        received = f"a path that cannot be read ({exc.strerror})"
        fix = "pass the path of an existing aliases file (data.aliases in the spec)"
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        received, fix = f"text that is not valid JSON ({exc})", "fix the JSON (UTF-8, one object)"
    raise _error(str(path), received=received, allowed=allowed, fix=fix)


def _grouped_aliases(groups: Mapping, name: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for canonical, spellings in groups.items():
        if not isinstance(spellings, list) or not all(isinstance(s, str) for s in spellings):
            raise _error(
                name,
                column=canonical,
                received=f"spellings {_show(spellings)}",
                allowed="a list of model names",
                fix=f'write "{canonical}": ["spelling", ...]',
            )
        for spelling in spellings:
            if mapping.get(spelling, canonical) != canonical:
                raise _error(
                    name,
                    column=spelling,
                    received=f"two canonical names {mapping[spelling]!r} and {canonical!r}",
                    allowed="one canonical name per spelling",
                    fix="list the spelling under one canonical name only",
                )
            mapping[spelling] = canonical
    return mapping


# ---------------------------------------------------------------- column checks


def _as_string(table: pa.Table, column: str, name: str) -> pa.ChunkedArray:
    col = table.column(column)
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        _check_utf8(pc.cast(col, pa.large_binary()), name, column)  # e.g. a CSV not saved as UTF-8
    try:
        col = col if col.type == pa.string() else pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _error(
            name,
            column=column,
            received=f"values of type {col.type}",
            allowed="text",
            fix=f"store {column} as text",
        ) from exc
    try:
        col.validate(full=True)  # JSON Lines and Parquet readers pass invalid UTF-8 through
    except pa.ArrowInvalid:
        _check_utf8(pc.cast(col, pa.large_binary()), name, column)
    return col


def _check_utf8(col: pa.ChunkedArray, name: str, column: str) -> None:
    """Raise for the first value that is not valid UTF-8 (the error path only: one value at a time)."""
    for row, value in enumerate(col.to_pylist()):
        try:
            value is None or value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(
                name,
                row=row,
                column=column,
                received=f"bytes that are not valid UTF-8 text ({_show(value)}: {exc.reason})",
                allowed="UTF-8 text",
                fix="save the file as UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`), or fix or drop the row",
            ) from None


def _text(table: pa.Table, column: str, name: str, *, what: str, fix: str) -> pa.ChunkedArray:
    col = _as_string(table, column, name)
    blank = pc.equal(pc.utf8_trim_whitespace(col), "")
    _raise_first(blank, name, column, what=what, allowed="non-empty text", fix=fix, values=col)
    return col


def _models(table, column, name, aliases: Mapping[str, str]) -> pa.ChunkedArray:
    fix = "fill in the model name or drop the row"
    col = _text(table, column, name, what="model name", fix=fix)
    if not aliases:
        return col
    index = pc.index_in(col, value_set=pa.array(list(aliases), pa.string()))
    mapped = pc.take(pa.array(list(aliases.values()), pa.string()), index)
    return pc.coalesce(mapped, col)


def _prompts(table: pa.Table, name: str) -> pa.ChunkedArray:
    fix = "drop rows without a prompt, or fill in the prompt text"
    return _text(table, "prompt", name, what="prompt", fix=fix)


def _prompt_ids(table: pa.Table, prompt: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if "prompt_id" in table.column_names:
        fix = "give every row a prompt_id, or drop the column to group by prompt text"
        return _text(table, "prompt_id", name, what="prompt_id", fix=fix)
    return _map_unique(prompt, _prompt_hash)


def _prompt_hash(text: str) -> str:
    return "h" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _map_unique(col: pa.ChunkedArray, fn) -> pa.ChunkedArray:
    """Apply a Python function to each distinct string once (the data may repeat them a lot)."""
    encoded = pc.dictionary_encode(col.combine_chunks())
    mapped = pa.array([fn(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return pa.chunked_array([pc.take(mapped, encoded.indices)])


def _sources(table: pa.Table, name: str, fallback: str) -> pa.ChunkedArray:
    for column in ("source", "benchmark"):
        if column in table.column_names:
            return pc.fill_null(_as_string(table, column, name), fallback)
    return pa.chunked_array([pa.array([fallback] * table.num_rows, pa.string())])


def _numbers(table: pa.Table, column: str, name: str, *, nullable: bool) -> pa.ChunkedArray:
    col = table.column(column)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.utf8_trim_whitespace(col)
    allowed = "a finite number" + (" or null" if nullable else " (not null or NaN)")
    fix = f"store {column} as numbers" + (" (leave unknown values empty)" if nullable else "")
    fix += "" if nullable else f"; drop rows without a {column}"
    try:
        col = pc.cast(col, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        row, value = _first_non_number(table.column(column))
        received = f"{column} {_show(value)}"
        raise _error(name, row=row, column=column, received=received, allowed=allowed, fix=fix) from exc
    values = col.to_numpy(zero_copy_only=False)  # null -> nan
    if nullable:  # pandas writes missing as NaN
        col = pa.chunked_array([pa.array(values, pa.float64(), from_pandas=True)])
        bad = ~np.isfinite(values) & ~np.isnan(values)
    else:
        bad = ~np.isfinite(values)
    _raise_first(bad, name, column, what=column, allowed=allowed, fix=fix, values=col)
    return col


def _first_non_number(col: pa.ChunkedArray) -> tuple[int | None, Any]:
    """Locate the value a float cast rejected (only on the error path)."""
    for row, value in enumerate(col.to_pylist()):
        if value is None:
            continue
        try:
            float(value)
        except (TypeError, ValueError):
            return row, value
    return None, f"values of type {col.type}"


# ---------------------------------------------------------------- pairs


def load_pairs(src, *, aliases=None, source: str | None = None) -> pa.Table:
    """Load pairwise or per-model scores data as a pairs table (``PAIRS_SCHEMA``).

    ``source`` of a row: its ``source``/``benchmark`` column if present, else the ``source``
    argument, else the file stem (``"table"`` for in-memory data). ``prompt_id``: the given one,
    else a stable hash of the prompt text. For scores data each prompt's models are paired in
    sorted name order (``model_a`` < ``model_b``) and equal scores are a "tie"."""
    table, name = read_table(src)
    kind = _check_table(table, name)
    mapping = load_aliases(aliases)
    fallback = source if source is not None else _stem(name)
    if kind == "pairwise":
        pairs = _pairwise(table, name, mapping, fallback)
    else:
        pairs = _score_pairs(_scores(table, name, mapping, fallback), name)
    ties = pc.sum(pc.equal(pairs["label"], 0)).as_py() or 0
    logger.info("%s: %d %s rows -> %d pairs (%d ties)", name, table.num_rows, kind, len(pairs), ties)
    return pairs


def load_scores(src, *, aliases=None) -> pa.Table:
    """The per-model scores table normalised to ``SCORES_SCHEMA`` (for routing-curve evaluation);
    DataError if the data is pairwise."""
    table, name = read_table(src)
    if _check_table(table, name) != "scores":
        raise _error(
            name,
            received="pairwise data (a winner column)",
            allowed=f"per-model scores: columns {list(SCORES_REQUIRED)}",
            fix="use load_pairs for pairwise data; routing curves need a score per model",
        )
    return _scores(table, name, load_aliases(aliases), _stem(name))


def _check_table(table: pa.Table, name: str) -> Literal["pairwise", "scores"]:
    if table.num_rows == 0:
        raise _error(
            name,
            received="a table with 0 rows",
            allowed="at least one row",
            fix="check the file or the filter that produced it",
        )
    return detect_schema(table, name=name)


def _stem(name: str) -> str:
    return "table" if name == TABLE_NAME else Path(name).stem


def _pairwise(table: pa.Table, name: str, aliases, fallback: str) -> pa.Table:
    prompt = _prompts(table, name)
    model_a = _models(table, "model_a", name, aliases)
    model_b = _models(table, "model_b", name, aliases)
    winner = _as_string(table, "winner", name)
    keys = pa.array(list(WINNER_LABELS), pa.string())
    _raise_first(
        pc.invert(pc.is_in(winner, value_set=keys)),
        name,
        "winner",
        what="winner",
        allowed=", ".join(map(repr, WINNER_LABELS)),
        fix="write which side won as one of these values (not the model's name)",
        values=winner,
    )
    _raise_first(
        pc.equal(model_a, model_b),
        name,
        "model_b",
        what="the same model on both sides:",
        allowed="two different models (after aliases)",
        fix="drop self-comparisons; check the aliases if two spellings were merged",
        values=model_b,
    )
    labels = pa.array(list(WINNER_LABELS.values()), pa.int8())
    label = pc.take(labels, pc.index_in(winner, value_set=keys))
    columns = {
        "prompt": prompt,
        "model_a": model_a,
        "model_b": model_b,
        "label": label,
        "tie_kind": pc.if_else(pc.equal(label, 0), winner, pa.scalar(None, pa.string())),
        "source": _sources(table, name, fallback),
        "prompt_id": _prompt_ids(table, prompt, name),
        **{c: _as_string(table, c, name) for c in ("response_a", "response_b") if c in table.column_names},
    }
    return _pairs_table(columns, table.num_rows)


def _pairs_table(columns: Mapping[str, Any], n: int) -> pa.Table:
    arrays = [
        pc.cast(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in PAIRS_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=PAIRS_SCHEMA)


def _scores(table: pa.Table, name: str, aliases, fallback: str) -> pa.Table:
    prompt = _prompts(table, name)
    n = table.num_rows
    has_cost = "cost" in table.column_names
    columns = {
        "prompt_id": _prompt_ids(table, prompt, name),
        "prompt": prompt,
        "model": _models(table, "model", name, aliases),
        "score": _numbers(table, "score", name, nullable=False),
        "cost": _numbers(table, "cost", name, nullable=True) if has_cost else pa.nulls(n),
        "source": _sources(table, name, fallback),
        "response": _as_string(table, "response", name) if "response" in table.column_names else pa.nulls(n),
    }
    arrays = [pc.cast(columns[f.name], f.type) for f in SCORES_SCHEMA]
    scores = pa.Table.from_arrays(arrays, schema=SCORES_SCHEMA)
    _check_duplicates(scores, *_score_order(scores), name)
    return scores


def _codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Integer code per row (in order of first appearance) and the distinct values."""
    encoded = pc.dictionary_encode(col.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def _score_order(scores: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row order putting each prompt's rows together (prompts in order of first appearance),
    models in sorted name order; and the prompt and model codes in that order."""
    prompt_code, _ = _codes(scores["prompt_id"])
    model_code, models = _codes(scores["model"])
    rank = np.empty(len(models), np.int64)
    rank[np.argsort(np.array(models, dtype=object), kind="stable")] = np.arange(len(models))
    model_rank = rank[model_code]
    order = np.lexsort((model_rank, prompt_code))
    return order, prompt_code[order], model_rank[order]


def _check_duplicates(scores, order, prompt_code, model_rank, name: str) -> None:
    dup = np.flatnonzero((prompt_code[1:] == prompt_code[:-1]) & (model_rank[1:] == model_rank[:-1]))
    if dup.size == 0:
        return
    first, second = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
    pid, model = scores["prompt_id"][second].as_py(), scores["model"][second].as_py()
    raise _error(
        name,
        row=second,
        column="model",
        received=f"a second score for prompt_id {_show(pid)} and model {_show(model)} "
        f"(first at row {first}; {dup.size} duplicates in all)",
        allowed="one row per (prompt_id, model)",
        fix="drop or average the duplicates; check the aliases if two spellings were merged",
    )


def _pair_positions(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, within runs of equal ``group`` values (positions in that array)."""
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, len(group)])
    parts_a, parts_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for size in np.unique(sizes[sizes > 1]):
        i, j = np.triu_indices(size, 1)
        first = starts[sizes == size][:, None]
        parts_a.append((first + i).ravel())
        parts_b.append((first + j).ravel())
    a, b = np.concatenate(parts_a), np.concatenate(parts_b)
    keep = np.lexsort((b, a))
    return a[keep], b[keep]


def _score_pairs(scores: pa.Table, name: str) -> pa.Table:
    order, prompt_code, _ = _score_order(scores)
    a, b = _pair_positions(prompt_code)
    if a.size == 0:
        raise _error(
            name,
            column="model",
            received="one model per prompt",
            allowed="two or more models scored on a prompt",
            fix="add the other models' scores, or check prompt_id",
        )
    rows_a, rows_b = scores.take(order[a]), scores.take(order[b])
    label = np.sign(rows_a["score"].to_numpy() - rows_b["score"].to_numpy()).astype(np.int8)
    columns = {
        "prompt": rows_a["prompt"],
        "model_a": rows_a["model"],
        "model_b": rows_b["model"],
        "label": pa.array(label, pa.int8()),
        "tie_kind": pa.array(np.where(label == 0, "tie", None), pa.string()),
        "source": rows_a["source"],
        "prompt_id": rows_a["prompt_id"],
        "score_a": rows_a["score"],
        "score_b": rows_b["score"],
        "cost_a": rows_a["cost"],
        "cost_b": rows_b["cost"],
        "response_a": rows_a["response"],
        "response_b": rows_b["response"],
    }
    return _pairs_table(columns, len(a))


def concat_pairs(tables: Iterable[pa.Table]) -> pa.Table:
    """Concatenate pairs tables into ``PAIRS_SCHEMA``: optional columns a table lacks are filled
    (``tie_kind`` "tie" for label 0, ``prompt_id`` hashed from the prompt, the rest null); other
    columns are dropped."""
    parts = []
    for k, table in enumerate(tables):
        name = f"<table {k}>"
        missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
        if missing:
            raise _error(
                name,
                received=f"columns {table.column_names} (missing {missing})",
                allowed=f"pairs tables with columns {list(PAIR_COLUMNS)}",
                fix="build the table with load_pairs",
            )
        columns = {c: table[c] for c in table.column_names if c in PAIRS_SCHEMA.names}
        if "tie_kind" not in columns:
            tie = pc.equal(table["label"], 0)
            columns["tie_kind"] = pc.if_else(tie, "tie", pa.scalar(None, pa.string()))
        if "prompt_id" not in columns:
            columns["prompt_id"] = _map_unique(pc.cast(table["prompt"], pa.string()), _prompt_hash)
        parts.append(_pairs_table(columns, table.num_rows))
    if not parts:
        raise ValueError("concat_pairs got no tables; pass at least one pairs table")
    return pa.concat_tables(parts)
