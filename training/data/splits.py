"""Split pairs by prompt and count comparisons per LLM (no torch).

``split_by_prompt`` keeps the validation prompts unseen: rows with the same normalised prompt text
(``normalise_prompt``), or the same group id, land on one side, chosen by a seeded blake2b hash
that is the same on every machine. ``near_duplicate_groups`` links prompts whose embeddings are
near-identical (cosine >= threshold, transitively) into groups to split by. ``model_counts`` and
``drop_rare_models`` count comparisons per LLM and drop the rarely compared ones;
``decisive_counts`` counts what trains an LLM's row after the split: its decisive (non-tie) pairs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from routerdb.prompt_keys import digest
from training.data.columns import map_unique
from training.data.score_pairs import dictionary_codes


def normalise_prompt(text: str | None) -> str:
    """The split key of a prompt: stripped, whitespace runs collapsed to one space, casefolded."""
    return " ".join((text or "").split()).casefold()


def split_by_prompt(
    pairs: pa.Table, fraction: float, seed: int, *, groups: np.ndarray | None = None
) -> tuple[pa.Table, pa.Table]:
    """(train, validation), prompt-disjoint: rows with the same normalised prompt text (or the
    same ``groups`` value, one per row) land on one side. Keys are ordered by a blake2b hash of
    (seed, key), so the split is the same on every machine; the first round(fraction * keys)
    keys (at least one, and not all) form the validation side."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction!r}; allowed: 0 < fraction < 1 (e.g. 0.1)")
    if groups is None:
        codes, keys = dictionary_codes(map_unique(pc.cast(pairs["prompt"], pa.string()), normalise_prompt))
    else:
        groups = np.asarray(groups)
        if groups.shape != (pairs.num_rows,):
            raise ValueError(
                f"groups has shape {groups.shape}; allowed: one value per row, "
                f"shape ({pairs.num_rows},); fix: index the group ids by each row's prompt"
            )
        unique, codes = np.unique(groups, return_inverse=True)
        keys = [str(u) for u in unique.tolist()]
    if len(keys) < 2:
        raise ValueError(f"{len(keys)} distinct prompt(s); a prompt-disjoint split needs >= 2")
    mask = held_out(keys, fraction, seed)[np.asarray(codes).ravel()]
    return pairs.filter(pa.array(~mask)), pairs.filter(pa.array(mask))


def held_out(keys: list[str], fraction: float, seed: int) -> np.ndarray:
    """Which of `keys` (two or more, distinct) are held out: the first round(fraction * keys), at
    least one and not all, in the order of a blake2b hash of (seed, key): the same everywhere."""
    # 8 digest bytes compare as the big-endian integer they spell
    ranked = sorted(range(len(keys)), key=lambda k: (digest(f"{seed}\x1f{keys[k]}", 8), keys[k]))
    n_out = min(max(round(fraction * len(keys)), 1), len(keys) - 1)
    out = np.zeros(len(keys), bool)
    out[ranked[:n_out]] = True
    return out


def near_duplicate_groups(embeddings: np.ndarray, threshold: float = 0.95) -> np.ndarray:
    """Group id per row (0, 1, ... in order of first row): rows linked by cosine >= threshold,
    transitively (union-find). Similarities are computed a block of rows at a time (~64 MiB),
    so 50k x 384 fits in memory. Pass one embedding per distinct prompt."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"embeddings of shape {x.shape}; allowed: a finite [n_prompts, dim] matrix")
    n = len(x)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    parent = np.arange(n)
    step = max(1, (1 << 24) // max(n, 1))  # rows per block: step x n float32 ~ 64 MiB
    for start in range(0, n, step):
        sims = x[start : start + step] @ x[start:].T  # [block, n - start]
        i, j = np.divmod(np.flatnonzero(sims >= threshold), sims.shape[1])  # faster than 2-D nonzero
        keep = j > i  # column j is row start + j: keep each unordered pair once
        _union(parent, i[keep] + start, j[keep] + start)
    _, groups = np.unique(_find(parent, np.arange(n)), return_inverse=True)
    return groups.astype(np.int64)


def _find(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    while True:
        up = parent[x]
        if np.array_equal(up, x):
            return x
        x = up


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Vectorised union: hook the larger root under the smaller until every edge is merged
    (conflicting writes lose, and are retried), so a root is the smallest row of its group."""
    while a.size:
        ra, rb = _find(parent, a), _find(parent, b)
        differ = ra != rb
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        parent[np.maximum(ra, rb)] = np.minimum(ra, rb)
        parent[:] = parent[parent]  # path halving keeps _find short


def model_counts(pairs: pa.Table) -> dict[str, int]:
    """Comparisons per LLM (ties included), most compared first."""
    sides = [pc.cast(pairs[c], pa.string()) for c in ("model_a", "model_b")]
    counts = pc.value_counts(pa.chunked_array(sides[0].chunks + sides[1].chunks, pa.string()))
    names, totals = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    return dict(sorted(zip(names, totals, strict=True), key=lambda kv: (-kv[1], kv[0])))


def drop_rare_models(pairs: pa.Table, min_comparisons: int) -> tuple[pa.Table, list[str]]:
    """Drop rows involving an LLM with fewer than ``min_comparisons`` comparisons, repeating until
    every kept LLM has enough (dropping rows lowers other counts). Returns (kept, dropped names)."""
    dropped: list[str] = []
    while True:
        rare = sorted(m for m, c in model_counts(pairs).items() if c < min_comparisons)
        if not rare:
            return pairs, sorted(dropped)
        dropped += rare
        pairs = drop_llms(pairs, rare)


def decisive_counts(pairs: pa.Table, names: list[str]) -> dict[str, int]:
    """Decisive (non-tie) pairs per LLM of `names` in `pairs` (0 for one without any): the pairs
    that move an LLM's row in the ranking loss. Count them on the training split."""
    decisive = pairs.filter(pc.not_equal(pairs["label"], 0))
    counts = dict.fromkeys(names, 0)
    for name, n in model_counts(decisive).items():
        if name in counts:
            counts[name] = n
    return counts


def drop_llms(pairs: pa.Table, names: list[str]) -> pa.Table:
    """`pairs` without the rows that involve one of `names`."""
    value_set = pa.array(names, pa.string())
    hit = pc.or_(pc.is_in(pairs["model_a"], value_set), pc.is_in(pairs["model_b"], value_set))
    return pairs.filter(pc.invert(hit))
