"""Column checks of comparison data: text, LLM names (aliases applied), prompt ids, sources and
numbers, each raising `training.data.errors.DataError` for the first bad value (no torch)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from routerdb.prompt_keys import digest
from training.data.errors import data_error, raise_first, show_value


def as_string(table: pa.Table, column: str, name: str) -> pa.ChunkedArray:
    col = table.column(column)
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        _check_utf8(pc.cast(col, pa.large_binary()), name, column)  # e.g. a CSV not saved as UTF-8
    try:
        col = col if col.type == pa.string() else pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise data_error(
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
            raise data_error(
                name,
                row=row,
                column=column,
                received=f"bytes that are not valid UTF-8 text ({show_value(value)}: {exc.reason})",
                allowed="UTF-8 text",
                fix="save the file as UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`), or fix or drop the row",
            ) from None


def _text(table: pa.Table, column: str, name: str, *, what: str, fix: str) -> pa.ChunkedArray:
    col = as_string(table, column, name)
    blank = pc.equal(pc.utf8_trim_whitespace(col), "")
    raise_first(blank, name, column, what=what, allowed="non-empty text", fix=fix, values=col)
    return col


def llm_column(table, column, name, aliases: Mapping[str, str]) -> pa.ChunkedArray:
    fix = "fill in the model name or drop the row"
    col = _text(table, column, name, what="model name", fix=fix)
    if not aliases:
        return col
    index = pc.index_in(col, value_set=pa.array(list(aliases), pa.string()))
    mapped = pc.take(pa.array(list(aliases.values()), pa.string()), index)
    return pc.coalesce(mapped, col)


def check_llm_spellings(names, name: str) -> None:
    """Refuse LLM names that differ only in letter case or surrounding spaces ('GPT-4', 'gpt-4 '):
    they would silently become two LLMs, one of them near-empty. An alias merges them explicitly."""
    groups: dict[str, list[str]] = {}
    for llm in sorted(set(names)):
        groups.setdefault(llm.strip().casefold(), []).append(llm)
    clashes = [spellings for spellings in groups.values() if len(spellings) > 1]
    if not clashes:
        return
    first = clashes[0]
    merge = json.dumps({"aliases": {first[0].strip(): [s for s in first if s != first[0].strip()]}})
    more = f" (and {len(clashes) - 1} more name(s) like it)" if len(clashes) > 1 else ""
    raise data_error(
        name,
        received=f"LLM names {', '.join(map(repr, first))} that differ only in letter case or surrounding "
                 f"spaces{more}",
        allowed="one spelling per LLM",
        fix=f"merge them with an aliases file (data.aliases / aliases=), e.g. {merge}, or correct the data",
    )


def prompt_column(table: pa.Table, name: str) -> pa.ChunkedArray:
    fix = "drop rows without a prompt, or fill in the prompt text"
    return _text(table, "prompt", name, what="prompt", fix=fix)


def prompt_id_column(table: pa.Table, prompt: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if "prompt_id" in table.column_names:
        fix = "give every row a prompt_id, or drop the column to group by prompt text"
        return _text(table, "prompt_id", name, what="prompt_id", fix=fix)
    return map_unique(prompt, prompt_hash)


def prompt_hash(text: str) -> str:
    return "h" + digest(text, 8).hex()


def map_unique(col: pa.ChunkedArray, fn) -> pa.ChunkedArray:
    """Apply a Python function to each distinct string once (the data may repeat them a lot)."""
    encoded = pc.dictionary_encode(col.combine_chunks())
    mapped = pa.array([fn(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return pa.chunked_array([pc.take(mapped, encoded.indices)])


def source_column(table: pa.Table, name: str, fallback: str) -> pa.ChunkedArray:
    for column in ("source", "benchmark"):
        if column in table.column_names:
            return pc.fill_null(as_string(table, column, name), fallback)
    return pa.chunked_array([pa.array([fallback] * table.num_rows, pa.string())])


def number_column(table: pa.Table, column: str, name: str, *, nullable: bool) -> pa.ChunkedArray:
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
        received = f"{column} {show_value(value)}"
        raise data_error(name, row=row, column=column, received=received, allowed=allowed, fix=fix) from exc
    values = col.to_numpy(zero_copy_only=False)  # null -> nan
    if nullable:  # pandas writes missing as NaN
        col = pa.chunked_array([pa.array(values, pa.float64(), from_pandas=True)])
        bad = ~np.isfinite(values) & ~np.isnan(values)
    else:
        bad = ~np.isfinite(values)
    raise_first(bad, name, column, what=column, allowed=allowed, fix=fix, values=col)
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
