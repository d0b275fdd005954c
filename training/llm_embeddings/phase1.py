"""Phase 1: train the LLM embedding model of `training.llm_embeddings.embedder` on comparison records.

The record network is trained on triplets of record sets with the triplet margin loss on cosine
distance (`training.llm_embeddings.records` says exactly how triplets are built), before the head, on the
training split only, and top-1 identification on held-out prompts is reported. Afterwards the
phase-1 LLMs' spread sets the model's standardisation (`_spread`).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from training.device import pick_device
from training.encoder.pretrained import resolve_encoder
from training.encoder.text_encoder import TextEncoder, TextVectors
from training.llm_embeddings import records as rec
from training.llm_embeddings.embedder import IDENTIFICATION_SETS_PER_LLM, KINDS, LLMEmbedder
from training.specs import DEFAULT_TRUNCATION
from training.trainer.optim import build_optimizers, schedule_factor

log = logging.getLogger(__name__)

WHITEN_SHRINK = 0.1  # whitening floor, x the mean variance of the LLMs' spread (see _spread)


def build_embedding_model(spec, records: rec.Records, *, encoder: str, max_length: int,
                          pooling: str = "auto", device: torch.device | None = None,
                          truncation: str = DEFAULT_TRUNCATION) -> LLMEmbedder:
    kind = KINDS[spec.kind]
    if not kind.phase1:
        raise ValueError(f"embedding_spec.kind {spec.kind!r} has no phase-1 model; use one of "
                         f"{[k for k, v in KINDS.items() if v.phase1]}")
    ref = resolve_encoder(spec.encoder or encoder)
    text = TextEncoder(ref, max_length, pooling, spec.finetuning if kind.finetunes_encoder else None,
                       truncation)
    return LLMEmbedder(spec, text, rec.win_rates(records), rec.bt_strengths(records),
                             device or pick_device())


def train_embedding_model(spec, pairs: pa.Table, *, encoder: str, max_length: int = 128,
                          truncation: str = DEFAULT_TRUNCATION, pooling: str = "auto", epochs: int = 5,
                          seed: int = 42,
                          device: torch.device | None = None, text_vectors: TextVectors | None = None,
                          progress: bool = False) -> LLMEmbedder:
    """Phase 1 on the comparison records of `pairs` (the router's training split)."""
    records = rec.comparison_records(pairs)
    fit, heldout = rec.split_records(records, spec.heldout_fraction, seed)
    torch.manual_seed(seed)
    model = build_embedding_model(spec, records, encoder=spec.encoder or encoder,
                                  max_length=max_length, pooling=pooling, device=device,
                                  truncation=truncation)
    model.text_vectors = text_vectors
    cached = None if model.text.trainable else model.vectors(records)
    enc_lr = spec.finetuning.lr if KINDS[spec.kind].finetunes_encoder else spec.lr
    optim = build_optimizers(spec.optimizer, model.text.encoder, list(model.net.parameters()), enc_lr,
                             spec.lr)
    steps = epochs * math.ceil(len(np.unique(fit.prompt)) / spec.prompts_per_step)
    optim.set_schedule(schedule_factor("cosine", int(0.05 * steps), max(steps, 1)))
    rng = np.random.default_rng(seed)
    log.info("phase 1 (%s): %d records of %d LLMs; %d prompts fit, %d held out for identification",
             spec.kind, len(records), len(records.llms), len(np.unique(fit.prompt)),
             len(np.unique(heldout.prompt)))
    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        loss = _epoch(model, optim, fit, cached, rng, progress)
        last = epoch == epochs - 1
        if cached is None and last:
            cached = model.vectors(records)  # the fine-tuned encoder, once, for evaluation
        top1 = model.identification(fit, heldout, cached) if cached is not None else float("nan")
        history.append({"epoch": epoch + 1, "triplet_loss": loss, "identification_top1": top1,
                        "seconds": time.perf_counter() - t0})
        log.info("phase 1 (%s) epoch %d: triplet loss %.4f, held-out top-1 identification %.3f "
                 "(%d LLMs, chance %.3f, %d records per set) (%.0fs)", spec.kind, epoch + 1, loss, top1,
                 len(records.llms), 1 / max(len(records.llms), 1), spec.records_per_set,
                 history[-1]["seconds"])
    if not epochs:
        top1 = model.identification(fit, heldout, cached)
        history.append({"epoch": 0, "triplet_loss": float("nan"), "identification_top1": top1,
                        "seconds": 0.0})
    model.center, model.scale = _spread(model, records, cached)
    model.report = {"identification_top1": history[-1]["identification_top1"], "llms": len(records.llms),
                    "chance": 1 / max(len(records.llms), 1), "records_per_set": spec.records_per_set,
                    "query_sets_per_llm": IDENTIFICATION_SETS_PER_LLM, "records": len(records),
                    "heldout_prompts": int(len(np.unique(heldout.prompt))), "history": history}
    return model


def phase1_embedder(config, train_pairs: pa.Table, source: str | None, device: torch.device,
                    text_vectors: TextVectors | None = None) -> LLMEmbedder:
    """The router's LLM embedder: loaded from `source` (a bundle, run or checkpoint directory), or
    trained by phase 1 on the router's training split. `config` is the router's RouterConfig."""
    if source is not None:
        embedder = LLMEmbedder.load(source, device)
        embedder.text_vectors = text_vectors
        log.info("LLM embedding model (%s) loaded from %s", embedder.kind, source)
    else:
        enc = config.encoder
        embedder = train_embedding_model(
            config.embedding_spec, train_pairs, encoder=enc.name, max_length=enc.max_length,
            truncation=enc.truncation, pooling=enc.pooling, epochs=config.embedding_model_epochs,
            seed=config.seed, device=device, text_vectors=text_vectors, progress=config.progress)
    if embedder.dim != config.embedding_spec.dim:
        raise ValueError(f"the loaded LLM embedding model has dim {embedder.dim}, "
                         f"embedding_spec.dim is {config.embedding_spec.dim}; set them equal")
    return embedder


def _spread(model: LLMEmbedder, records: rec.Records, vectors) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the phase-1 LLMs' unit vectors, and a shrunk whitening matrix [D-1, D-1]: each
    principal direction of the LLMs' spread scaled to variance var / (var + shrink x mean var)."""
    raw = torch.from_numpy(model.raw_embeddings(records, None, vectors)).double()
    center = raw.mean(0)
    _, sv, vt = torch.linalg.svd(raw - center, full_matrices=True)
    var = torch.zeros(vt.shape[0], dtype=torch.float64)
    var[:len(sv)] = sv**2 / len(raw)
    floor = WHITEN_SHRINK * var[var > 0].mean().clamp(min=1e-12) if (var > 0).any() else torch.tensor(1.0)
    return center.float(), (vt.T / torch.sqrt(var + floor)).float()


def _epoch(model: LLMEmbedder, optim, fit: rec.Records, cached, rng, progress: bool) -> float:
    spec = model.spec
    model.net.train()
    model.text.encoder.train(model.text.trainable)
    losses = []
    steps = rec.triplet_steps(fit, spec.prompts_per_step, spec.records_per_set, rng)
    for step in tqdm(steps, desc=f"phase 1 ({spec.kind})", disable=not progress, leave=False):
        emb = model.embed_sets(fit, np.concatenate([step.anchor, step.positive]), cached)
        anchor, positive = emb.chunk(2)
        loss = batch_all_triplet_loss(anchor, positive, spec.margin)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def batch_all_triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet margin loss (cosine distance) over every (anchor_i, positive_i, positive_j), j != i."""
    n = len(anchor)  # anchor, positive [N, D], row i from LLM i
    i, j = torch.nonzero(~torch.eye(n, dtype=torch.bool, device=anchor.device), as_tuple=True)
    return F.triplet_margin_with_distance_loss(anchor[i], positive[i], positive[j], margin=margin,
                                               distance_function=cosine_distance)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 1.0 - (x * y).sum(-1)  # inputs are unit vectors
