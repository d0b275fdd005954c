"""Every LLM's score per row as an Arrow MAP(VARCHAR, DOUBLE): `route_scores` in SQL and in rescoring."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

SCORES_TYPE = pa.map_(pa.string(), pa.float64())


def score_map(names: Sequence[str], scores: np.ndarray, missing: np.ndarray | None = None) -> pa.MapArray:
    """Scores [P, M] (columns in the order of `names`) -> one {name: score} map per row.

    Rows where `missing` (bool [P]) is True are NULL maps (a NULL prompt).
    """
    n, m = len(scores), len(names)
    offsets = pa.array(np.arange(0, n * m + 1, m, dtype=np.int32) if m else np.zeros(n + 1, np.int32))
    keys = pa.array(list(names) * n, type=pa.string())
    values = pa.array(np.asarray(scores, dtype=np.float64).reshape(-1), type=pa.float64())
    mask = None if missing is None else pa.array(missing, type=pa.bool_())
    return pa.MapArray.from_arrays(offsets, keys, values, type=SCORES_TYPE, mask=mask)
