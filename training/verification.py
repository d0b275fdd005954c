"""Exports are verified, not trusted: a written bundle is scored by routerdb's own torch-free
`Router` (ONNX Runtime on the CPU) and compared with its reference before it is kept."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from routerdb.bundle import Bundle
from routerdb.router import Router

__all__ = ["ExportError", "bundle_scores", "max_gap"]


class ExportError(RuntimeError):
    """An exported or quantised graph does not reproduce its reference; nothing was written."""


def bundle_scores(bundle: str | Path | Bundle, prompts: Sequence[str]) -> np.ndarray:
    """[P, M] scores of a bundle by the runtime on the CPU, uncached (what a user will get)."""
    return Router.for_verification(bundle).score(list(prompts))


def max_gap(got: np.ndarray, reference: np.ndarray) -> float:
    """max |got - reference|; nan or inf when a score is not finite (a failed check either way)."""
    return float(np.abs(got - reference).max())
