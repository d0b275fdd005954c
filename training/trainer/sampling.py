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


def pair_weights(p_idx: np.ndarray, source: np.ndarray, base: np.ndarray, prompt_weighting: str,
                 source_weights: dict[str, float]) -> np.ndarray:
    """Loss weight per training pair, scaled to mean 1.

    `prompt_weighting` says what one prompt is worth: "pairs": every pair counts once, so a prompt
    with many pairs counts more; "prompts": each prompt's pairs share a total of 1, so every
    prompt counts the same; "sqrt": in between (a prompt with n pairs counts sqrt(n)).
    `source_weights` then multiplies the pairs of each named source (the `source` column; others
    x 1). `base` carries weights set before (half-weight ties)."""
    counts = np.bincount(p_idx, weights=base)[p_idx]  # pairs of each row's prompt
    per_prompt = {"pairs": np.ones_like(counts), "sqrt": 1.0 / np.sqrt(counts), "prompts": 1.0 / counts}
    if prompt_weighting not in per_prompt:
        raise ValueError(f"prompt_weighting {prompt_weighting!r}; allowed: {sorted(per_prompt)}")
    w = base * per_prompt[prompt_weighting]
    unknown = sorted(set(source_weights) - set(np.unique(source).tolist()))
    if unknown:
        log.warning("source_weights name sources not in the training data: %s", ", ".join(unknown))
    for name, factor in source_weights.items():
        w = np.where(source == name, w * factor, w)
    if prompt_weighting != "pairs" or source_weights:
        shares = {s: float(w[source == s].sum() / w.sum()) for s in np.unique(source)}
        log.info("share of the training loss per source: %s",
                 ", ".join(f"{k} {v:.1%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])))
    return w / w.mean()


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
