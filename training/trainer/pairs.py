"""Training pairs as index arrays: prompt, LLM a, LLM b, label, source and loss weight per pair."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class PairArrays:
    """Pairs as index arrays into a bank of distinct prompts and the LLM list."""

    def __init__(self, pairs: pa.Table, prompt_index: dict[str, int], llm_index: dict[str, int]):
        self.p = np.array([prompt_index[p] for p in pairs["prompt"].to_pylist()], dtype=np.int64)
        self.a = np.array([llm_index[m] for m in pairs["model_a"].to_pylist()], dtype=np.int64)
        self.b = np.array([llm_index[m] for m in pairs["model_b"].to_pylist()], dtype=np.int64)
        self.label = pairs["label"].to_numpy().astype(np.int64)
        self.source = np.asarray(pairs["source"].to_pylist(), dtype=object)
        self.weight = np.ones(len(self.label))  # loss weight per pair (sampling.pair_weights)

    def _subset(self, rows) -> PairArrays:
        out = object.__new__(PairArrays)
        for name, values in vars(self).items():
            setattr(out, name, values[rows])
        return out

    def decisive(self) -> PairArrays:
        return self._subset(self.label != 0)

    def ties_as_half_wins(self) -> PairArrays:
        """The decisive pairs, plus every tie twice (once won by each side) at half weight."""
        tie = np.flatnonzero(self.label == 0)
        rows = np.concatenate([np.flatnonzero(self.label != 0), tie, tie])
        out = self._subset(rows)
        n = len(tie)
        if n:
            out.label[-2 * n:] = np.repeat([1, -1], n)
            out.weight[-2 * n:] *= 0.5
        return out

    def __len__(self) -> int:
        return len(self.label)


class PointArrays:
    """Per-model scores as index arrays: prompt, LLM, target score in [0, 1]; each (prompt, LLM)
    once, from the `score_a` / `score_b` columns the pairs of per-model-score data carry."""

    def __init__(self, pairs: pa.Table, prompt_index: dict[str, int], llm_index: dict[str, int]):
        p = np.array([prompt_index[x] for x in pairs["prompt"].to_pylist()], dtype=np.int64)
        sides = []
        for llm_col, score_col in (("model_a", "score_a"), ("model_b", "score_b")):
            score = pairs[score_col].to_numpy(zero_copy_only=False).astype(np.float64)
            m = np.array([llm_index[x] for x in pairs[llm_col].to_pylist()], dtype=np.int64)
            sides.append((p, m, score))
        p, m, y = (np.concatenate(parts) for parts in zip(*sides, strict=True))
        keep = np.isfinite(y)
        p, m, y = p[keep], m[keep], y[keep]
        _, first = np.unique(p * (len(llm_index) + 1) + m, return_index=True)
        first = np.sort(first)
        self.p, self.m, self.y = p[first], m[first], y[first]

    def __len__(self) -> int:
        return len(self.p)
