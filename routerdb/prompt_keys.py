"""How prompts are told apart: a digest of their exact text, and distinct values with an index.

`digest` is the one hash of prompt text in routerdb and training: the Router's cache key (16
bytes), training's prompt ids, its seeded prompt-disjoint splits and the transfer study's folds
(8 bytes). BLAKE2b, so every machine and Python process gets the same bytes (Python's `hash()`
is salted per process). Training's frozen-encoder cache keeps sha256 keys because they are on
disk (`training.encoder.prompt_cache`). `distinct` turns rows of values into the distinct values,
in order of first appearance, and each row's index into them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np

V = TypeVar("V", bound=Hashable)


def digest(text: str, size: int = 16) -> bytes:
    """The BLAKE2b digest of `text`'s UTF-8 bytes, `size` bytes long (1 to 64); a lone surrogate,
    which strict UTF-8 refuses, is hashed as its own bytes rather than failing."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).digest()


def distinct(values: Sequence[V]) -> tuple[list[V], np.ndarray]:
    """(distinct values in order of first appearance, int64 [len(values)] index of each row's value
    into them): `distinct(["b", "a", "b"])` is `(["b", "a"], [0, 1, 0])`."""
    index: dict[V, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return list(index), codes
