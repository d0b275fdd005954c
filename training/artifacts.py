"""What every training artifact shares: file names, format versions, library versions, hashing,
the device and the quantisation check. A leaf: it imports nothing else of `training`.

A router checkpoint (`TransformerEmbeddingModel.save`, a run's `checkpoint/`) is a directory of
`router.json` (config, LLM names, pooling, features, history), `weights.safetensors` and
`tokenizer.json`. An LLM embedder (phase 1) saves `embedding_model.json` +
`embedding_model.safetensors`, in a checkpoint's `embedding_model/` and in a bundle.
"""

from __future__ import annotations

import importlib.metadata as md

import torch
from torch import nn

from routerdb.bundle import sha256_file

__all__ = ["CHECKPOINT_CONFIG", "CHECKPOINT_VERSION", "CHECKPOINT_WEIGHTS", "EMBEDDER_CONFIG",
           "ExportError",
           "EMBEDDER_FORMAT", "EMBEDDER_FORMAT_VERSION", "EMBEDDER_WEIGHTS", "TOKENIZER_FILE",
           "is_quantized", "library_versions", "pick_device", "sha256_file"]

# a router checkpoint
CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, TOKENIZER_FILE = "router.json", "weights.safetensors", "tokenizer.json"
CHECKPOINT_VERSION = 1

# an LLM embedder (phase 1)
EMBEDDER_FORMAT, EMBEDDER_FORMAT_VERSION = "routerdb-embedding-model", 1
EMBEDDER_CONFIG, EMBEDDER_WEIGHTS = "embedding_model.json", "embedding_model.safetensors"

# recorded in every manifest and saved embedder, where installed
VERSIONED = ("routerdb", "torch", "transformers", "peft", "onnx", "onnxruntime-gpu", "onnxruntime",
             "tokenizers", "bitsandbytes")


class ExportError(RuntimeError):
    """An exported or quantised graph does not reproduce its reference; nothing was written."""


def library_versions() -> dict[str, str]:
    """{distribution: version} of the libraries that shape an artifact, those installed."""
    out = {}
    for name in VERSIONED:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_quantized(module: nn.Module) -> bool:
    """Loaded in 4 or 8 bits by bitsandbytes (such a module is placed on its device when loaded
    and must not be moved with `.to()`)."""
    return bool(getattr(module, "is_loaded_in_4bit", False) or getattr(module, "is_quantized", False)
                or any(p.dtype == torch.uint8 for p in module.parameters()))
