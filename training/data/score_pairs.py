"""Per-model scores turned into pairs (no torch).

The input is a scores table already normalised by ``training.data.read`` (``SCORES_SCHEMA``: one row
per prompt and model). ``check_duplicates`` rejects a second score for a (prompt_id, model);
``score_pair_columns`` pairs every two models scored on one prompt, in sorted name order
(``model_a`` < ``model_b``), label +1 / -1 by the higher score and 0 ("tie") for equal scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.data.errors import data_error, show_value


def dictionary_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Integer code per row (in order of first appearance) and the distinct values."""
    encoded = pc.dictionary_encode(col.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def _score_order(scores: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row order putting each prompt's rows together (prompts in order of first appearance),
    models in sorted name order; and the prompt and model codes in that order."""
    prompt_code, _ = dictionary_codes(scores["prompt_id"])
    model_code, models = dictionary_codes(scores["model"])
    rank = np.empty(len(models), np.int64)
    rank[np.argsort(np.array(models, dtype=object), kind="stable")] = np.arange(len(models))
    model_rank = rank[model_code]
    order = np.lexsort((model_rank, prompt_code))
    return order, prompt_code[order], model_rank[order]


def check_duplicates(scores: pa.Table, name: str) -> None:
    """DataError for the first (prompt_id, model) scored twice, naming both rows."""
    order, prompt_code, model_rank = _score_order(scores)
    dup = np.flatnonzero((prompt_code[1:] == prompt_code[:-1]) & (model_rank[1:] == model_rank[:-1]))
    if dup.size == 0:
        return
    first, second = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
    pid, model = scores["prompt_id"][second].as_py(), scores["model"][second].as_py()
    raise data_error(
        name,
        row=second,
        column="model",
        received=f"a second score for prompt_id {show_value(pid)} and model {show_value(model)} "
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


def score_pair_columns(scores: pa.Table, name: str) -> dict[str, Any]:
    """The columns of the pairs table (every ``PAIRS_SCHEMA`` field, one row per pair of models
    scored on one prompt); DataError if no prompt has two models."""
    order, prompt_code, _ = _score_order(scores)
    a, b = _pair_positions(prompt_code)
    if a.size == 0:
        raise data_error(
            name,
            column="model",
            received="one model per prompt",
            allowed="two or more models scored on a prompt",
            fix="add the other models' scores, or check prompt_id",
        )
    rows_a, rows_b = scores.take(order[a]), scores.take(order[b])
    label = np.sign(rows_a["score"].to_numpy() - rows_b["score"].to_numpy()).astype(np.int8)
    return {
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
