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

Model names are mapped through the aliases (``training.data.aliases.load_aliases``) before any
check. Every problem raises ``training.data.errors.DataError`` naming the file (``<table>`` for
in-memory data), the 0-based row in the order read (a CSV header is not a row), the column, what
was received, what is allowed and the fix. Scores become pairs in `training.data.score_pairs`;
prompt-disjoint splitting and near-duplicate grouping are in `training.data.splits`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from routerdb import table_file
from training.data.aliases import load_aliases
from training.data.columns import (
    as_string,
    check_llm_spellings,
    llm_column,
    map_unique,
    number_column,
    prompt_column,
    prompt_hash,
    prompt_id_column,
    source_column,
)
from training.data.errors import DataError, data_error, raise_first
from training.data.score_pairs import check_duplicates, score_pair_columns

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ("prompt", "model_a", "model_b", "label", "source")
PAIRWISE_REQUIRED = ("prompt", "model_a", "model_b", "winner")
SCORES_REQUIRED = ("prompt", "model", "score")
WINNER_LABELS = {"model_a": 1, "model_b": -1, "tie": 0, "tie (bothbad)": 0}
TABLE_NAME = "<table>"  # display name of in-memory data in error messages
SUFFIXES = table_file.SUFFIXES  # and .gz after a CSV / TSV / JSON Lines suffix

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


# ---------------------------------------------------------------- reading


def read_table(src) -> tuple[pa.Table, str]:
    """Read a path (Parquet, CSV / TSV, JSON Lines, see `routerdb.table_file`, the reader rescore
    uses too), a ``pa.Table`` or a pandas DataFrame; return the table and a display name."""
    if isinstance(src, pa.Table):
        return src, TABLE_NAME
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(src, pandas.DataFrame):
        try:
            return pa.Table.from_pandas(src, preserve_index=False), TABLE_NAME
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError) as exc:
            raise data_error(
                TABLE_NAME,
                received=f"a DataFrame Arrow cannot convert ({exc})",
                allowed="columns of one type each (text, numbers)",
                fix="convert mixed-type columns, e.g. df[col].astype(str)",
            ) from exc
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        return _read_file(path, str(path)), str(path)
    raise TypeError(f"read_table got {type(src).__name__}; pass a file path, a pyarrow.Table or a DataFrame")


def _check_suffix(path: Path, name: str) -> None:
    if table_file.kind(path) is None:
        raise data_error(
            name,
            received=f"file suffix {path.suffix.lower()!r}",
            allowed=table_file.described_suffixes(),
            fix="save the data as Parquet, CSV / TSV or JSON Lines with one of these suffixes",
        )


def _read_file(path: Path, name: str) -> pa.Table:
    _check_suffix(path, name)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file; pass the path of an existing data file")
    found = table_file.kind(path)
    try:
        return table_file.read_table(path)  # the reader `routerdb rescore` uses too
    except (pa.ArrowInvalid, pa.ArrowTypeError, table_file.TableFileError) as exc:
        hint = ""
        if found == "csv":
            dialect = _dialect_or_none(path)
            if dialect is not None:
                hint = (f" (read as {_DELIMITER_NAMES.get(dialect.delimiter, repr(dialect.delimiter))}-"
                        f"separated, {len(dialect.columns)} header columns)")
        raise data_error(
            name,
            received=f"a file that cannot be parsed as {found}{hint} ({exc})",
            allowed="Parquet, CSV / TSV with a header row (comma, tab, semicolon or pipe separated, "
                    "quoted fields may hold the separator), or JSON Lines (one object per line)",
            fix="check the file format: every row needs as many fields as the header, a field holding "
                "the separator must be quoted; write .json files as one JSON object per line",
        ) from exc


_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def _dialect_or_none(path: Path):
    try:
        return table_file.csv_dialect(path)
    except (OSError, table_file.TableFileError):
        return None


def peek_schema(path: str | os.PathLike) -> Literal["pairwise", "scores"]:
    """The schema of a data file from its header alone (Parquet metadata, the CSV header row, the
    first JSON line): what `training.fit --validate-only` checks without reading the data.
    FileNotFoundError for a missing path or a directory, DataError for an unknown suffix or schema."""
    path = Path(path)
    name = str(path)
    if path.is_dir():
        raise FileNotFoundError(f"{name}: a directory, not a data file; pass the path of a Parquet, CSV or "
                                "JSON Lines file (a directory's files are given one by one)")
    _check_suffix(path, name)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file; pass the path of an existing data file")
    try:
        return detect_schema(_header_columns(path), name=name)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise data_error(name, received=f"a file whose header cannot be read ({exc})",
                         allowed="Parquet, CSV with a header row, or JSON Lines (one object per line)",
                         fix="check the file format") from exc


def _header_columns(path: Path) -> list[str]:
    return table_file.columns(path)


def detect_schema(table: pa.Table | list[str], *, name: str = TABLE_NAME) -> Literal["pairwise", "scores"]:
    """``"pairwise"`` or ``"scores"``, by the columns present (a table, or its column names);
    DataError if neither matches."""
    found = set(table if isinstance(table, list) else table.column_names)
    if set(PAIRWISE_REQUIRED) <= found:
        return "pairwise"
    if set(SCORES_REQUIRED) <= found:
        return "scores"
    missing_p = [c for c in PAIRWISE_REQUIRED if c not in found]
    missing_s = [c for c in SCORES_REQUIRED if c not in found]
    raise data_error(
        name,
        received=f"columns {sorted(found)}",
        allowed=(
            f"pairwise columns {list(PAIRWISE_REQUIRED)} (missing {missing_p}) or scores columns "
            f"{list(SCORES_REQUIRED)} (missing {missing_s}); optional: prompt_id, source, "
            "benchmark, cost"
        ),
        fix="rename or add the missing columns (names are case-sensitive)",
    )


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
        columns = score_pair_columns(_scores(table, name, mapping, fallback), name)
        pairs = _pairs_table(columns, len(columns["label"]))
    check_llm_spellings(pair_llms(pairs), name)
    ties = pc.sum(pc.equal(pairs["label"], 0)).as_py() or 0
    logger.info("%s: %d %s rows -> %d pairs (%d ties)", name, table.num_rows, kind, len(pairs), ties)
    return pairs


def load_scores(src, *, aliases=None) -> pa.Table:
    """The per-model scores table normalised to ``SCORES_SCHEMA`` (for routing-curve evaluation);
    DataError if the data is pairwise."""
    table, name = read_table(src)
    if _check_table(table, name) != "scores":
        raise data_error(
            name,
            received="pairwise data (a winner column)",
            allowed=f"per-model scores: columns {list(SCORES_REQUIRED)}",
            fix="use load_pairs for pairwise data; routing curves need a score per model",
        )
    return _scores(table, name, load_aliases(aliases), _stem(name))


def _check_table(table: pa.Table, name: str) -> Literal["pairwise", "scores"]:
    if table.num_rows == 0:
        raise data_error(
            name,
            received="a table with 0 rows",
            allowed="at least one row",
            fix="check the file or the filter that produced it",
        )
    return detect_schema(table, name=name)


def _stem(name: str) -> str:
    return "table" if name == TABLE_NAME else Path(name).stem


def _pairwise(table: pa.Table, name: str, aliases, fallback: str) -> pa.Table:
    prompt = prompt_column(table, name)
    model_a = llm_column(table, "model_a", name, aliases)
    model_b = llm_column(table, "model_b", name, aliases)
    winner = as_string(table, "winner", name)
    keys = pa.array(list(WINNER_LABELS), pa.string())
    raise_first(
        pc.invert(pc.is_in(winner, value_set=keys)),
        name,
        "winner",
        what="winner",
        allowed=", ".join(map(repr, WINNER_LABELS)),
        fix="write which side won as one of these values (not the model's name)",
        values=winner,
    )
    raise_first(
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
        "source": source_column(table, name, fallback),
        "prompt_id": prompt_id_column(table, prompt, name),
        **{c: as_string(table, c, name) for c in ("response_a", "response_b") if c in table.column_names},
    }
    return _pairs_table(columns, table.num_rows)


def _pairs_table(columns: Mapping[str, Any], n: int) -> pa.Table:
    arrays = [
        pc.cast(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type) for f in PAIRS_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=PAIRS_SCHEMA)


def _scores(table: pa.Table, name: str, aliases, fallback: str) -> pa.Table:
    prompt = prompt_column(table, name)
    n = table.num_rows
    has_cost = "cost" in table.column_names
    columns = {
        "prompt_id": prompt_id_column(table, prompt, name),
        "prompt": prompt,
        "model": llm_column(table, "model", name, aliases),
        "score": number_column(table, "score", name, nullable=False),
        "cost": number_column(table, "cost", name, nullable=True) if has_cost else pa.nulls(n),
        "source": source_column(table, name, fallback),
        "response": as_string(table, "response", name) if "response" in table.column_names else pa.nulls(n),
    }
    arrays = [pc.cast(columns[f.name], f.type) for f in SCORES_SCHEMA]
    scores = pa.Table.from_arrays(arrays, schema=SCORES_SCHEMA)
    check_llm_spellings(pc.unique(scores["model"]).to_pylist(), name)
    check_duplicates(scores, name)
    return scores


def pair_llms(pairs: pa.Table) -> set[str]:
    """The LLMs named on either side of a pairs table."""
    return set(pc.unique(pairs["model_a"]).to_pylist()) | set(pc.unique(pairs["model_b"]).to_pylist())


def concat_pairs(tables: Iterable[pa.Table]) -> pa.Table:
    """Concatenate pairs tables into ``PAIRS_SCHEMA``: optional columns a table lacks are filled
    (``tie_kind`` "tie" for label 0, ``prompt_id`` hashed from the prompt, the rest null); other
    columns are dropped."""
    parts = []
    for k, table in enumerate(tables):
        name = f"<table {k}>"
        missing = [c for c in PAIR_COLUMNS if c not in table.column_names]
        if missing:
            raise data_error(
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
            columns["prompt_id"] = map_unique(pc.cast(table["prompt"], pa.string()), prompt_hash)
        parts.append(_pairs_table(columns, table.num_rows))
    if not parts:
        raise ValueError("concat_pairs got no tables; pass at least one pairs table")
    pairs = pa.concat_tables(parts)
    check_llm_spellings(pair_llms(pairs), f"<{len(parts)} tables>")
    return pairs
