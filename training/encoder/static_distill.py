"""Distilling a static encoder from a transformer, offline, and finding it for a spec.

The recipe is model2vec's (MIT; its `distill` with default settings): every vocabulary token is
run through the transformer alone, between its special tokens ([CLS] token [SEP]), and the output
states are mean-pooled into that token's vector; PCA keeps `dims` dimensions; each row is scaled by
SIF weight a / (a + p(token)), with p from Zipf's law over the token ids (a = 1e-4), so frequent
tokens count less in a prompt's mean. Special and `[unusedN]` tokens get zero rows. It is
reimplemented here (numpy and the transformer, ~30 s for all-MiniLM-L6-v2 on 2 cores) because
`model2vec[distill]` pins older transformers and tokenizers than routerdb uses; a folder written
here is in model2vec's format and model2vec reads it.

The result is cached under `build/cache/static/` by source, dimensions and recipe version, so a
router, its checkpoint reload and its resume read the same table without distilling again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from routerdb.tokenizer import special_tokens
from training.encoder.pretrained import EncoderRef, load_base_model, resolve_encoder
from training.encoder.static import (
    CONFIG_FILE,
    STATIC_MODEL_TYPE,
    TABLE_FILE,
    TOKENIZER_FILE,
    is_static_folder,
)

log = logging.getLogger(__name__)

CACHE_ROOT = Path("build/cache/static")  # relative to the working directory, as build/cache/ is
RECIPE_VERSION = 1  # bump when the distillation changes: cached tables of another recipe are not read
SIF_COEFFICIENT = 1e-4  # model2vec's default
UNUSED_TOKEN = re.compile(r"\[unused\d+\]")  # BERT's placeholder tokens: never produced from text
BATCH = 512  # tokens per forward pass while distilling


def resolve_static(name: str, dims: int, root: Path | None = None) -> EncoderRef:
    """The static encoder of `encoder.name`: a local model2vec folder as it is, else the table
    distilled from the transformer `name` (from the cache, distilling it on first use)."""
    path = Path(name).expanduser()
    if path.is_dir() and is_static_folder(path):
        return EncoderRef(name, str(path), "local", kind="static")
    source = resolve_encoder(name)
    folder = cache_folder(source, dims, CACHE_ROOT if root is None else root)
    if not is_static_folder(folder):
        distill_to(source, dims, folder)
    return EncoderRef(name, str(folder), "distilled", kind="static")


def cache_folder(source: EncoderRef, dims: int, root: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", source.location).strip("_")[-80:]
    return root / f"{slug}-{dims}d-r{RECIPE_VERSION}"


def distill_to(source: EncoderRef, dims: int, folder: Path) -> Path:
    """Distil `source` into a static folder at `folder`, written whole or not at all."""
    t0 = time.perf_counter()
    table, tokenizer_json, hidden = distill_table(source, dims)
    config = {"model_type": STATIC_MODEL_TYPE, "architectures": ["StaticModel"], "normalize": True,
              "hidden_dim": int(table.shape[1]), "apply_pca": dims, "sif_coefficient": SIF_COEFFICIENT,
              "tokenizer_name": source.name, "seq_length": 1_000_000,
              "routerdb": {"distilled_from": source.name, "location": source.location,
                           "source_hidden_size": hidden, "recipe_version": RECIPE_VERSION}}
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({"embeddings": table}, str(tmp / TABLE_FILE))
    (tmp / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    try:
        tmp.rename(folder)  # a reader never sees half a folder
    except OSError:  # another process distilled the same table first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("distilled a static encoder from %s: %d tokens x %d dims in %.1f s -> %s", source.name,
             table.shape[0], table.shape[1], time.perf_counter() - t0, folder)
    return folder


@torch.no_grad()
def distill_table(source: EncoderRef, dims: int) -> tuple[np.ndarray, str, int]:
    """(table [V, dims] float32, the source's tokenizer.json, the source's hidden size)."""
    hf = AutoTokenizer.from_pretrained(source.location, trust_remote_code=False)
    model = load_base_model(source).eval()
    hidden = int(model.config.hidden_size)
    if dims > hidden:
        raise ValueError(f"encoder.static_dims is {dims} but {source.name} has {hidden} dimensions; "
                         f"PCA cannot add any. Set encoder.static_dims to at most {hidden}.")
    vocab = len(hf)
    special = set(hf.all_special_ids)
    kept = [i for i, tok in enumerate(hf.convert_ids_to_tokens(list(range(vocab))))
            if i not in special and not UNUSED_TOKEN.fullmatch(tok or "")]
    bare = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    bare.no_padding()  # shipped tokenizer.json files may pad to a fixed length
    bare.no_truncation()
    prefix, suffix = special_tokens(bare)
    states = _token_states(model, [[*prefix, i, *suffix] for i in kept])
    table = np.zeros((vocab, dims), np.float32)
    table[kept] = (_pca(states, dims) * _sif_weights(len(kept))[:, None]).astype(np.float32)
    return table, hf.backend_tokenizer.to_str(), hidden


def _token_states(model, sequences: list[list[int]]) -> np.ndarray:
    """[N, H] float64: each sequence's mean output state (all sequences have one length)."""
    out = []
    device = next(model.parameters()).device
    for start in range(0, len(sequences), BATCH):
        ids = torch.tensor(sequences[start:start + BATCH], device=device)
        mask = torch.ones_like(ids)
        out.append(model(input_ids=ids, attention_mask=mask).last_hidden_state.float().mean(1).cpu())
    return torch.cat(out).double().numpy()


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    """x [N, H] projected on its top `dims` principal axes [N, dims], each axis signed so that its
    largest-magnitude score is positive (deterministic, as model2vec)."""
    centred = x - x.mean(0)
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / max(len(x) - 1, 1))
    scores = centred @ eigvecs[:, ::-1][:, :dims]
    signs = np.sign(scores[np.abs(scores).argmax(0), np.arange(dims)])
    return scores * np.where(signs == 0, 1.0, signs)


def _sif_weights(n: int) -> np.ndarray:
    """[n] a / (a + p): p the Zipf probability of the token of rank r (token-id order), ~ 1 / (r + 1)."""
    inv_rank = 1.0 / np.arange(2, n + 2)
    return SIF_COEFFICIENT / (SIF_COEFFICIENT + inv_rank / inv_rank.sum())
