"""``DataError`` and the helpers that build its messages (no torch).

Every problem with input data (``training.data.read``, ``training.data.aliases``,
``training.data.score_pairs``) raises ``DataError`` naming where (file, 0-based row, column),
what was received, what is allowed and the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class DataError(ValueError):
    """Bad input data: the message names where (file, 0-based row, column), what was received,
    what is allowed and how to fix it. ``name``, ``row`` and ``column`` are kept as attributes."""

    def __init__(
        self, message: str, *, name: str | None = None, row: int | None = None, column: str | None = None
    ):
        super().__init__(message)
        self.name, self.row, self.column = name, row, column


def data_error(name, *, row=None, column=None, received: str, allowed: str, fix: str) -> DataError:
    """A ``DataError`` whose message reads "<where>: received ...; allowed: ...; fix: ..."."""
    where = name + (f", row {row}" if row is not None else "")
    where += f", column {column!r}" if column is not None else ""
    message = f"{where}: received {received}; allowed: {allowed}; fix: {fix}"
    if row is not None:
        message += " (rows count from 0 in the order read; a CSV header is not a row)"
    return DataError(message, name=name, row=row, column=column)


def show_value(value: Any) -> str:
    """A value as quoted in an error message: its repr, cut to 80 characters; None as null."""
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def raise_first(bad, name, column, *, what, allowed: str, fix: str, values=None) -> None:
    """Raise for the first True row of ``bad`` (a boolean array, null counted as bad)."""
    if isinstance(bad, (pa.Array, pa.ChunkedArray)):
        bad = pc.fill_null(bad, True).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(bad)
    if rows.size == 0:
        return
    row = int(rows[0])
    received = what if values is None else f"{what} {show_value(values[row].as_py())}"
    if rows.size > 1:
        received += f" (and {rows.size - 1} more rows like it)"
    raise data_error(name, row=row, column=column, received=received, allowed=allowed, fix=fix)
