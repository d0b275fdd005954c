"""Prompt tokenisation shared by training and the runtime: `tokenizer.json` -> int64 batches.

Training builds a `PromptTokenizer` from the encoder's fast tokenizer and writes the same
`tokenizer.json` into the bundle, so a prompt is cut and tokenised identically in both places.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

# Text beyond this many characters per token of max_length cannot reach the encoder; cutting it
# first keeps a 5 MB prompt from costing seconds in the tokenizer.
CHARS_PER_TOKEN_BOUND = 16


@dataclass
class Batch:
    input_ids: np.ndarray  # [B, T] int64
    attention_mask: np.ndarray  # [B, T] int64


class PromptTokenizer:
    """Tokenises prompts to padded int64 arrays, truncating to `max_length` tokens."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int, padding_side: str):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)
        self.padding_side = padding_side
        self.json = tokenizer_json
        self._tok = Tokenizer.from_str(tokenizer_json)
        # Shipped tokenizer.json files may carry fixed-length padding; pad to the batch's longest.
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=self.max_length)

    @classmethod
    def from_file(cls, path, max_length: int, pad_id: int, padding_side: str) -> PromptTokenizer:
        with open(path, encoding="utf-8") as fh:
            return cls(fh.read(), max_length, pad_id, padding_side)

    def clean(self, prompt: str | None) -> str:
        text = "" if prompt is None else str(prompt)
        text = text[: self.max_length * CHARS_PER_TOKEN_BOUND]
        # Lone surrogates cannot be encoded to UTF-8; replace them instead of failing.
        return text.encode("utf-8", "replace").decode("utf-8")

    def token_ids(self, prompts: Sequence[str | None]) -> list[list[int]]:
        encodings = self._tok.encode_batch([self.clean(p) for p in prompts])
        return [enc.ids for enc in encodings]

    def pad(self, ids: Sequence[Sequence[int]]) -> Batch:
        longest = max((len(x) for x in ids), default=0) or 1
        input_ids = np.full((len(ids), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        for row, seq in enumerate(ids):
            if not seq:  # e.g. an empty prompt for a tokenizer without special tokens
                seq = [self.pad_id]
            n = len(seq)
            cols = slice(0, n) if self.padding_side == "right" else slice(longest - n, longest)
            input_ids[row, cols] = seq
            mask[row, cols] = 1
        return Batch(input_ids, mask)

    def __call__(self, prompts: Sequence[str | None]) -> Batch:
        return self.pad(self.token_ids(prompts))
