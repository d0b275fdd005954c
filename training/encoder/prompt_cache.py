"""A disk cache of frozen-encoder prompt embeddings, keyed by sha256 of the prompt text.

The encoder is the whole cost of every frozen-encoder experiment (all-MiniLM-L6-v2 encodes
~50 prompts/s on 2 CPU cores), so each distinct prompt is encoded once, ever, and every head
training run, baseline and near-duplicate split reads the vectors from here:

    cache = PromptCache.for_encoder("sentence-transformers/all-MiniLM-L6-v2", max_length=128)
    cache.fill(prompts)                 # encodes only the prompts not cached yet
    vectors = cache.lookup(prompts)     # [P, H] float32, in input order
    vectors = cache.vectors(prompts)    # both: what a frozen-encoder router reads

The vectors are exactly what `TransformerEmbeddingModel.embed_prompts` returns for a frozen
encoder (same tokenizer, truncation, pooling and normalisation): they are computed by a
`training.encoder.text_encoder.TextEncoder` of the same encoder. A frozen-encoder router reads them
through `model.frozen_vectors = cache.vectors` (`training.fit` sets it, so `make router` encodes
nothing already cached).
Storage: Parquet shards `part-<time>-<pid>.parquet` with columns `key` (sha256 hex) and `embedding`
(list<float32>), under `build/cache/<encoder>-<max_length>/`; a shard is written every
`shard_size` prompts, so an interrupted fill keeps what it finished. No pickle.
A prompt that fits in `max_length` tokens has one vector whatever the truncation, keyed by the
sha256 of its text; a longer one is keyed by the sha256 of `<truncation>\0<text>` (plain text for
"head", the cut of caches written before truncation was a choice), so switching the truncation
re-encodes only the long prompts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from training.encoder.pretrained import load_tokenizer, resolve_encoder
from training.encoder.text_encoder import TextEncoder
from training.specs import DEFAULT_TRUNCATION

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("build/cache")


def prompt_key(text: str, cut_by: str = "head") -> str:
    """The cache key of a prompt; `cut_by` is the truncation for a prompt longer than max_length."""
    salt = "" if cut_by == "head" else f"{cut_by}\0"
    return hashlib.sha256((salt + text).encode("utf-8")).hexdigest()


class PromptCache:
    def __init__(self, directory: str | Path, encoder: str, max_length: int = 128,
                 truncation: str = DEFAULT_TRUNCATION):
        self.directory = Path(directory)
        self.encoder, self.max_length, self.truncation = encoder, max_length, truncation
        self._index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []
        self._keys: dict[str, str] = {}
        self._text: TextEncoder | None = None  # built on the first prompt to encode
        self._tokenizer = None
        self._load()

    @classmethod
    def for_encoder(cls, encoder: str, max_length: int = 128, root: str | Path = DEFAULT_ROOT,
                    truncation: str = DEFAULT_TRUNCATION) -> PromptCache:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder).strip("_")
        return cls(Path(root) / f"{slug}-{max_length}", encoder, max_length, truncation)

    def keys(self, prompts: Sequence[str]) -> list[str]:
        """Cache keys in input order (prompts are tokenised once, to tell which ones are cut)."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._keys]
        if new and self.truncation != "head":
            if self._tokenizer is None:
                self._tokenizer = load_tokenizer(resolve_encoder(self.encoder), self.max_length, "head")
            # a prompt of max_length tokens after a head cut may have been cut: key it as cut
            lengths = [len(x) for x in self._tokenizer.token_ids(new)]
            cut = [n >= self._tokenizer.max_length for n in lengths]
        else:
            cut = [False] * len(new)
        for p, c in zip(new, cut, strict=True):
            self._keys[p] = prompt_key(p, self.truncation if c else "head")
        return [self._keys[p] for p in prompts]

    def _load(self) -> None:
        for shard in sorted(self.directory.glob("part-*.parquet")):
            table = pq.read_table(shard)
            keys = table["key"].to_pylist()
            flat = table["embedding"].combine_chunks()
            dim = len(flat[0]) if len(flat) else 0
            values = flat.flatten().to_numpy().astype(np.float32).reshape(len(keys), dim)
            for key, row in zip(keys, values, strict=True):
                if key not in self._index:
                    self._index[key] = len(self._rows)
                    self._rows.append(row)

    def __len__(self) -> int:
        return len(self._index)

    def missing(self, prompts: Sequence[str]) -> list[str]:
        """Distinct prompts (first-seen order) that have no cached vector."""
        seen: dict[str, None] = {}
        for p, key in zip(prompts, self.keys(prompts), strict=True):
            if key not in self._index:
                seen.setdefault(p, None)
        return list(seen)

    def fill(self, prompts: Sequence[str], shard_size: int = 2000, progress: bool = False) -> int:
        """Encode and store every prompt not cached yet; returns how many were encoded."""
        todo = self.missing(prompts)
        if not todo:
            return 0
        text = self._text_encoder()
        lengths = np.array([len(x) for x in text.tokenizer.token_ids(todo)])
        todo = [todo[i] for i in np.argsort(lengths, kind="stable")]  # similar lengths together
        self.directory.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for start in range(0, len(todo), shard_size):
            chunk = todo[start:start + shard_size]
            vectors = text.vectors(chunk, progress=progress)
            self._write_shard(chunk, vectors)
            done = start + len(chunk)
            log.info("cached %d/%d prompts (%.1f prompts/s)", done, len(todo),
                     done / (time.perf_counter() - t0))
        return len(todo)

    def lookup(self, prompts: Sequence[str]) -> np.ndarray:
        """Cached vectors [P, H] in input order; KeyError naming how many are missing."""
        try:
            rows = [self._index[key] for key in self.keys(prompts)]
        except KeyError:
            n = len(self.missing(prompts))
            raise KeyError(f"{n} prompt(s) are not in the embedding cache {self.directory}; "
                           "call PromptCache.fill(prompts) first") from None
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._rows[i] for i in rows])

    def vectors(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, H] in input order, encoding (and storing) the prompts not cached yet."""
        prompts = list(prompts)
        self.fill(prompts)
        return self.lookup(prompts)

    @property
    def dim(self) -> int:
        return len(self._rows[0]) if self._rows else 0

    def _write_shard(self, prompts: list[str], vectors: np.ndarray) -> None:
        keys = self.keys(prompts)
        name = f"part-{time.time_ns():020d}-{os.getpid()}"  # unique: two processes may fill at once
        dim = vectors.shape[1]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        table = pa.table({"key": keys, "embedding": emb.cast(pa.list_(pa.float32()))})
        tmp = self.directory / f".{name}.tmp"
        pq.write_table(table, tmp)
        tmp.rename(self.directory / f"{name}.parquet")  # a reader never sees half a shard
        for key, row in zip(keys, vectors, strict=True):
            self._index.setdefault(key, len(self._rows))
            if self._index[key] == len(self._rows):
                self._rows.append(row)

    def _text_encoder(self) -> TextEncoder:
        """The frozen encoder, with the tokenizer, truncation and pooling a router of it uses."""
        if self._text is None:
            self._text = TextEncoder(resolve_encoder(self.encoder), self.max_length, "auto", None,
                                     self.truncation)
        return self._text
