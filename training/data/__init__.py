"""Comparison data: read and validate pairs or per-model scores, aliases, splits.

The public entry points, re-exported here: `load_pairs`, `load_scores`, `concat_pairs`,
`read_table`, `detect_schema`, `load_aliases` and `DataError`.
"""

from training.data.aliases import load_aliases
from training.data.errors import DataError
from training.data.read import concat_pairs, detect_schema, load_pairs, load_scores, read_table

__all__ = ["DataError", "concat_pairs", "detect_schema", "load_aliases", "load_pairs", "load_scores",
           "read_table"]
