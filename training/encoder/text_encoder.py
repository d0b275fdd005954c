"""A sentence encoder on its own: texts -> pooled vectors, with its tokenizer and pooling.

Used where texts are encoded outside the router network: the phase-1 LLM embedder's record texts
(`training.llm_embeddings`) and the frozen prompt-vector cache (`training.encoder.prompt_cache`).
It computes exactly what the router's `RouterNet.embed` computes for the same encoder, tokenizer
and pooling (same padding, same length-sorted batches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from routerdb.tokenizer import length_batches
from training.encoder.finetuning import prepare_encoder
from training.encoder.pooling import Pooling, detect_pooling
from training.encoder.pretrained import EncoderRef, load_base_model, load_config, load_tokenizer
from training.specs import DEFAULT_TRUNCATION

TextVectors = Callable[[Sequence[str]], np.ndarray]  # texts -> [T, H] float32 frozen-encoder vectors


class TextEncoder(nn.Module):
    """A sentence encoder with its tokenizer and pooling: texts -> vectors [T, H].

    Frozen unless `finetuning` (a spec of `training.encoder.finetuning.METHODS`) is given."""

    def __init__(self, ref: EncoderRef, max_length: int, pooling: str = "auto", finetuning=None,
                 truncation: str = DEFAULT_TRUNCATION):
        super().__init__()
        self.ref = ref
        self.tokenizer = load_tokenizer(ref, max_length, truncation)
        config = load_config(ref)
        mode, normalize, _ = detect_pooling(ref.local_dir, config)
        self.pooling = Pooling(mode if pooling == "auto" else pooling, normalize)
        if finetuning is None:
            self.encoder = load_base_model(ref).requires_grad_(False).eval()
        else:
            self.encoder = prepare_encoder(finetuning, ref)
        self.hidden_size = int(config.hidden_size)

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.encoder.parameters())

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(texts)
        device = next(self.encoder.parameters()).device
        ids, mask = (torch.from_numpy(x).to(device) for x in (batch.input_ids, batch.attention_mask))
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.pooling(hidden, mask).float()

    @torch.no_grad()
    def vectors(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """[T, H] float32 in input order; batches of similar token length."""
        was_training = self.encoder.training
        self.encoder.eval()
        out = np.zeros((len(texts), self.hidden_size), np.float32)
        batches = length_batches(self.tokenizer.token_ids(texts), batch_size)
        for rows in tqdm(batches, desc="encoding", disable=not progress, unit="batch"):
            out[rows] = self([texts[i] for i in rows]).cpu().numpy()
        self.encoder.train(was_training)
        return out
