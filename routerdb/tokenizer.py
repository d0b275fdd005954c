"""Prompt tokenisation shared by training and the runtime: `tokenizer.json` -> int64 batches.

Training builds a `PromptTokenizer` from the encoder's fast tokenizer and writes the same
`tokenizer.json` into the bundle, so a prompt is cut and tokenised identically in both places.

A prompt longer than `max_length` tokens is cut by its `truncation` (kept in the bundle manifest):
  head       keep the beginning (the Hugging Face default; bundles without the field use it)
  tail       keep the end
  head_tail  keep the first quarter of the budget from the beginning and the rest from the end:
             few-shot benchmark prompts share long worked examples at the start and differ only
             in the question at the end, and a chat prompt's instruction is usually at the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

# Text beyond this many characters per token of max_length cannot reach the encoder; cutting it
# first keeps a 5 MB prompt from costing seconds in the tokenizer.
CHARS_PER_TOKEN_BOUND = 16
TRUNCATIONS = ("head", "tail", "head_tail")
HEAD_SHARE = 4  # head_tail keeps budget // HEAD_SHARE tokens from the beginning


@dataclass
class Batch:
    input_ids: np.ndarray  # [B, T] int64
    attention_mask: np.ndarray  # [B, T] int64


class PromptTokenizer:
    """Tokenises prompts to padded int64 arrays, truncating to `max_length` tokens."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int, padding_side: str,
                 truncation: str = "head"):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)
        self.padding_side = padding_side
        self.truncation = truncation
        self.json = tokenizer_json
        self._tok = Tokenizer.from_str(tokenizer_json)
        # Shipped tokenizer.json files may carry fixed-length padding; pad to the batch's longest.
        self._tok.no_padding()
        direction = "left" if truncation == "tail" else "right"
        self._tok.enable_truncation(max_length=self.max_length, direction=direction)
        if truncation == "head_tail":  # the cut prompts are cut again by hand in token_ids
            self._whole = Tokenizer.from_str(tokenizer_json)
            self._whole.no_padding()
            self._whole.no_truncation()
            self._prefix, self._suffix = special_tokens(self._whole)
            budget = max(self.max_length - len(self._prefix) - len(self._suffix), 1)
            self._head = budget // HEAD_SHARE
            self._tail = budget - self._head

    @property
    def vocab_size(self) -> int:
        """Token ids this tokenizer can produce: 0 to vocab_size - 1."""
        return self._tok.get_vocab_size()

    @classmethod
    def from_file(cls, path, max_length: int, pad_id: int, padding_side: str,
                  truncation: str = "head") -> PromptTokenizer:
        with open(path, encoding="utf-8") as fh:
            return cls(fh.read(), max_length, pad_id, padding_side, truncation)

    def clean(self, prompt: str | None) -> str:
        text = "" if prompt is None else str(prompt)
        bound = self.max_length * CHARS_PER_TOKEN_BOUND
        if len(text) > bound:
            if self.truncation == "head":
                text = text[:bound]
            elif self.truncation == "tail":
                text = text[-bound:]
            elif len(text) > 2 * bound:
                text = text[:bound] + "\n" + text[-bound:]  # the middle is cut by token_ids anyway
        # Lone surrogates cannot be encoded to UTF-8; replace them instead of failing.
        return text.encode("utf-8", "replace").decode("utf-8")

    def token_ids(self, prompts: Sequence[str | None]) -> list[list[int]]:
        # encode_batch_fast: the same ids without character offsets, which nothing here reads; the
        # tokenizer is the whole cost of a static-encoder bundle
        texts = [self.clean(p) for p in prompts]
        if self.truncation != "head_tail":
            return [enc.ids for enc in self._tok.encode_batch_fast(texts)]
        # One pass, every text whole, cut here: a tokenizer's own truncation also tokenises the whole
        # text first, so this costs one truncated pass (it was two for the prompts that are cut).
        out = []
        for enc in self._whole.encode_batch_fast(texts, add_special_tokens=False):
            seq = enc.ids
            if len(seq) > self._head + self._tail:
                seq = seq[:self._head] + seq[len(seq) - self._tail:]
            out.append(self._prefix + seq + self._suffix)
        return out

    def pad(self, ids: Sequence[Sequence[int]], width: int = 0) -> Batch:
        """Token ids padded with pad_id to the longest row (or to `width` if that is longer)."""
        longest = max(max((len(x) for x in ids), default=0), width) or 1
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


def special_tokens(tok: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after one sequence ([CLS] / [SEP],
    <s> / </s>, BOS, or nothing), found by post-processing a probe text."""
    probe = tok.encode("a", add_special_tokens=False).ids
    full = tok.encode("a").ids
    for k in range(len(full) - len(probe) + 1):
        if full[k:k + len(probe)] == probe:
            return full[:k], full[k + len(probe):]
    raise ValueError("the tokenizer's post-processor changes the tokens of a text; "
                     "use truncation 'head' or 'tail' with it")


def length_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Row indices of `ids` in batches of at most `batch_size`, shortest first: prompts of similar
    token length share a batch, so little of it is padding (the encoder's cost is the padded size)."""
    order = np.argsort([len(x) for x in ids], kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
