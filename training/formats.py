"""What a training artifact is on disk: its file names, its format version, and the library
versions it records. A leaf: it imports nothing else of `training`.

A router checkpoint (`TransformerEmbeddingModel.save`, a run's `checkpoint/`) is a directory of
`router.json` (config, LLM names, pooling, features, history), `weights.safetensors` and
`tokenizer.json`. An LLM embedder (phase 1) saves `embedding_model.json` +
`embedding_model.safetensors`, in a checkpoint's `embedding_model/` and in a bundle.
"""

from __future__ import annotations

import importlib.metadata as md

__all__ = ["CHECKPOINT_CONFIG", "CHECKPOINT_VERSION", "CHECKPOINT_WEIGHTS", "EMBEDDER_CONFIG",
           "EMBEDDER_FORMAT", "EMBEDDER_FORMAT_VERSION", "EMBEDDER_WEIGHTS", "TOKENIZER_FILE",
           "VERSIONED", "library_versions"]

# a router checkpoint
CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS, TOKENIZER_FILE = "router.json", "weights.safetensors", "tokenizer.json"
CHECKPOINT_VERSION = 1

# an LLM embedder (phase 1)
EMBEDDER_FORMAT, EMBEDDER_FORMAT_VERSION = "routerdb-embedding-model", 1
EMBEDDER_CONFIG, EMBEDDER_WEIGHTS = "embedding_model.json", "embedding_model.safetensors"

# recorded in every manifest and saved embedder, where installed
VERSIONED = ("routerdb", "torch", "transformers", "peft", "onnx", "onnxruntime-gpu", "onnxruntime",
             "tokenizers", "bitsandbytes")


def library_versions() -> dict[str, str]:
    """{distribution: version} of the libraries that shape an artifact, those installed."""
    out = {}
    for name in VERSIONED:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out
