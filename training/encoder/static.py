"""The static encoder: a vector per vocabulary token, mean-pooled. The fast tier.

A prompt's vector is the mean of its tokens' rows of one table (`StaticEncoder`, an `nn.Embedding`),
so encoding costs a table lookup: in ONNX a Gather and the same masked mean pooling as the
transformer tier, in the same bundle format (tokenizer.json + model.onnx) served by the same
runtime. The token-frequency weighting (SIF) is baked into the rows, which is what makes the plain
mean a weighted one. The table comes from a folder in model2vec's format (`config.json` with
`model_type` "model2vec", `model.safetensors` holding `embeddings` [V, H] and optionally `weights`
[V] and `mapping` [V], `tokenizer.json`): one written by `training.encoder.static_distill` from a
transformer, or any local model2vec model. As model2vec does, prompts are tokenised without the
special tokens ([CLS], [SEP]) a transformer needs.

A leaf: it imports nothing else of `training`, so that `training.encoder.pretrained` can load a
static folder like any other encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

STATIC_MODEL_TYPE = "model2vec"  # config.json's model_type in a static folder (model2vec's format)
TABLE_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"


class StaticEncoderError(ValueError):
    """A static encoder folder that cannot be used; says what is wrong and how to fix it."""


@dataclass(frozen=True)
class StaticConfig:
    """What the router reads of an encoder's config (hidden size, pooling), for a static folder."""

    hidden_size: int
    normalize: bool
    model_type: str = STATIC_MODEL_TYPE
    architectures: list[str] = field(default_factory=lambda: ["StaticModel"])
    is_decoder: bool = False


class StaticEncoder(nn.Module):
    """input_ids [B, T] -> last_hidden_state [B, T, H]: each token's row of the table.

    Called like a transformers encoder (`encoder(input_ids=..., attention_mask=...)`), so
    `RouterNet.embed` pools it as it pools a transformer's token states."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.embed_tokens = nn.Embedding(*table.shape)  # [V, H], trainable unless frozen
        with torch.no_grad():
            self.embed_tokens.weight.copy_(table.float())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self.embed_tokens(input_ids))


def is_static_folder(path: Path) -> bool:
    config = path / CONFIG_FILE
    if not (config.is_file() and (path / TABLE_FILE).is_file() and (path / TOKENIZER_FILE).is_file()):
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == STATIC_MODEL_TYPE
    except (ValueError, OSError):
        return False


def load_static_config(folder: Path) -> StaticConfig:
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    return StaticConfig(hidden_size=int(read_table(folder).shape[1]),
                        normalize=bool(config.get("normalize", True)))


def read_table(folder: Path) -> np.ndarray:
    """The token table [V, H] float32: `embeddings`, rows picked by `mapping` and scaled by `weights`
    where the folder has them (model2vec's vocabulary quantisation)."""
    tensors = load_file(str(folder / TABLE_FILE))
    if "embeddings" not in tensors:
        raise StaticEncoderError(
            f"{folder / TABLE_FILE} holds {sorted(tensors)} but no 'embeddings' tensor; a static encoder "
            "folder is model2vec's format. Point encoder.name at such a folder, or at a transformer to "
            "distil one from.")
    table = tensors["embeddings"].astype(np.float32)
    if "mapping" in tensors:
        table = table[tensors["mapping"].astype(np.int64)]
    if "weights" in tensors:
        table = table * tensors["weights"].astype(np.float32)[:, None]
    if table.ndim != 2:
        raise StaticEncoderError(f"{folder / TABLE_FILE}: the token table has shape {table.shape}, not "
                                 "[vocabulary, dimensions]; write it as a 2-D tensor.")
    return np.ascontiguousarray(table)


def load_static_encoder(folder: Path) -> StaticEncoder:
    table = read_table(folder)
    vocab = _tokenizer_vocab_size(folder)
    if table.shape[0] < vocab:
        raise StaticEncoderError(
            f"{folder}: the token table has {table.shape[0]} rows but tokenizer.json has {vocab} tokens; "
            "every token id needs a row. Write the table and tokenizer of the same model.")
    return StaticEncoder(torch.from_numpy(table))


def static_tokenizer_json(folder: Path) -> tuple[str, int]:
    """(tokenizer.json text without special-token post-processing, padding and truncation; pad id)."""
    spec = json.loads((folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
    spec["post_processor"] = None  # no [CLS] / [SEP]: the table's rows are for text tokens
    spec["padding"] = None
    spec["truncation"] = None
    vocab = spec.get("model", {}).get("vocab") or {}
    pad = next((vocab[t] for t in ("[PAD]", "<pad>", "<PAD>") if isinstance(vocab, dict) and t in vocab), 0)
    return json.dumps(spec, ensure_ascii=False), int(pad)


def _tokenizer_vocab_size(folder: Path) -> int:
    return Tokenizer.from_file(str(folder / TOKENIZER_FILE)).get_vocab_size()
