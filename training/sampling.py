"""How training pairs become batches: whole prompts per step, or balanced pair sampling."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import torch

log = logging.getLogger(__name__)


def prompt_batches(p_idx: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """Shuffle distinct prompts, then cut into steps of about `batch_size` pairs (whole prompts)."""
    prompts, inverse = np.unique(p_idx, return_inverse=True)
    by_prompt = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[by_prompt], np.arange(len(prompts) + 1))
    order = torch.randperm(len(prompts), generator=generator).numpy()
    batches, current, size = [], [], 0
    for k in order:
        rows = by_prompt[bounds[k]:bounds[k + 1]]
        current.append(rows)
        size += len(rows)
        if size >= batch_size:
            batches.append(np.concatenate(current))
            current, size = [], 0
    if current:
        batches.append(np.concatenate(current))
    return batches


def balanced_weights(a_idx: np.ndarray, b_idx: np.ndarray, n_models: int) -> np.ndarray:
    """Per-pair weight: inverse frequency of the pair's rarer LLM (the one with fewer pairs)."""
    counts = np.bincount(np.concatenate([a_idx, b_idx]), minlength=n_models).astype(np.float64)
    rarer = np.minimum(counts[a_idx], counts[b_idx])
    return 1.0 / np.maximum(rarer, 1.0)


def balanced_batches(weights: np.ndarray, batch_size: int,
                     generator: torch.Generator) -> list[np.ndarray]:
    sampler = torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(weights),
                                                     replacement=True, generator=generator)
    drawn = np.fromiter(iter(sampler), dtype=np.int64, count=len(weights))
    return [drawn[i:i + batch_size] for i in range(0, len(drawn), batch_size)]


def model_shares(a_idx: np.ndarray, b_idx: np.ndarray, names: list[str],
                 weights: np.ndarray | None = None) -> dict[str, float]:
    """Each LLM's share of pair appearances, optionally under sampling weights."""
    w = np.ones(len(a_idx)) if weights is None else weights
    totals: Counter[str] = Counter()
    for idx in (a_idx, b_idx):
        for j, value in enumerate(np.bincount(idx, weights=w, minlength=len(names))):
            totals[names[j]] += float(value)
    grand = sum(totals.values()) or 1.0
    return {name: totals[name] / grand for name in names}
