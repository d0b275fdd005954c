"""The prompt column of a log: which Arrow types hold prompt text, and its values as Python str.

Text is read as it is: string, large_string, string_view and dictionary-encoded text (a pandas
Categorical). Numbers, booleans, dates and other types are refused unless the caller asks for their
text form (`cast=True`, `routerdb rescore --cast-prompt`). Either way only the text that is scored
changes, never the column written out.

Parquet lets a string column hold bytes that are not UTF-8 (pyarrow writes them unchecked).
`on_invalid_utf8="error"` stops at the first such value, naming its row; `"replace"` scores the text
with U+FFFD in place of the bad bytes.
"""

from __future__ import annotations

import pyarrow as pa

from routerdb.log_input import RescoreError

ON_INVALID_UTF8 = ("error", "replace")


class InvalidUtf8(ValueError):
    """A prompt whose bytes are not UTF-8, at `row` of the batch."""

    def __init__(self, row: int, value: bytes):
        super().__init__(f"row {row}: bytes that are not valid UTF-8 ({value[:40]!r})")
        self.row, self.value = row, value


def is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return is_text(kind.value_type)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def check_prompt_column(schema: pa.Schema, prompt_column: str, cast: bool = False) -> None:
    """Refuse a missing prompt column, or one that is not text (unless `cast` and it has a text form)."""
    if prompt_column not in schema.names:
        raise RescoreError(f"no column {prompt_column!r} in the input; its columns are {schema.names}. "
                           "Name the prompt column with --prompt-column.")
    kind = schema.field(prompt_column).type
    if is_text(kind):
        return
    if not cast:
        raise RescoreError(f"column {prompt_column!r} is {kind}, not text; pass --cast-prompt to score its "
                           "values' text form (the column is written unchanged), or name the column that "
                           "holds the prompt text with --prompt-column.")
    try:
        pa.array([], kind).cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        raise RescoreError(f"column {prompt_column!r} is {kind}, which has no text form to score; name the "
                           "column that holds the prompt text with --prompt-column.") from None


def prompt_texts(column: pa.Array | pa.ChunkedArray, on_invalid_utf8: str = "error") -> list[str | None]:
    """The column's values as str (None for NULL), decoded, cast to text where it is not text."""
    if on_invalid_utf8 not in ON_INVALID_UTF8:
        raise ValueError(f"on_invalid_utf8={on_invalid_utf8!r}; allowed: {', '.join(ON_INVALID_UTF8)}")
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not is_text(column.type):
        column = column.cast(pa.string())
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        return _decode(column, on_invalid_utf8 == "replace")


def _decode(column: pa.Array, replace: bool) -> list[str | None]:
    binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
    out: list[str | None] = []
    for row, value in enumerate(column.view(binary).to_pylist()):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            if not replace:
                raise InvalidUtf8(row, value) from None
            out.append(value.decode("utf-8", "replace"))
    return out
