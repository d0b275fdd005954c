"""training.encoder.prompt_cache: frozen prompt vectors stored once, read back exactly, used by the
trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import tiny_models
from training.encoder.prompt_cache import PromptCache
from training.router import TransformerEmbeddingModel
from training.specs import Frozen, ValidationSplit


def test_fill_lookup_reload_and_read_by_the_router(tiny_encoders, tmp_path):
    prompts = ["Solve 2x + 3 = 7.", "Write a haiku about rain.", "Solve 2x + 3 = 7."]
    cache = PromptCache.for_encoder(str(tiny_encoders["bert"]), 64, tmp_path)
    assert cache.missing(prompts) == prompts[:2]
    assert cache.fill(prompts, shard_size=1) == 2 and cache.fill(prompts) == 0
    vectors = cache.lookup(prompts)
    assert vectors.shape == (3, 32) and np.array_equal(vectors[0], vectors[2])
    assert len(list(cache.directory.glob("part-*.parquet"))) == 2  # one shard per `shard_size`
    again = PromptCache.for_encoder(str(tiny_encoders["bert"]), 64, tmp_path)
    assert np.array_equal(again.lookup(prompts), vectors)
    with pytest.raises(KeyError, match="1 prompt"):
        again.lookup(["never seen"])

    model = TransformerEmbeddingModel(encoder={"name": str(tiny_encoders["bert"]), "max_length": 64},
                                      finetuning=Frozen(), use_prompt_features=False, progress=False)
    model.build(["x", "y"], None)
    direct = model.embed_prompts(prompts).cpu().numpy()
    assert np.allclose(direct, vectors, atol=1e-6)  # the cache holds what the trainer computes
    model.frozen_vectors = again.vectors
    got = model.embed_prompts(prompts + ["never seen"])  # a miss is encoded and stored
    assert isinstance(got, torch.Tensor) and got.shape == (4, 32) and len(again) == 3


def test_switching_truncation_re_encodes_only_the_prompts_that_were_cut(tiny_encoders, tmp_path):
    short = "Solve 2x + 3 = 7."
    long = " ".join(["Explain why the sky is blue in simple terms."] * 6) + " Then write a haiku."
    encoder = str(tiny_encoders["bert"])
    head = PromptCache.for_encoder(encoder, 16, tmp_path, truncation="head")
    head.fill([short, long])
    both = PromptCache.for_encoder(encoder, 16, tmp_path, truncation="head_tail")  # same directory
    assert both.directory == head.directory and both.missing([short, long]) == [long]
    assert both.fill([short, long]) == 1
    assert np.array_equal(both.lookup([short]), head.lookup([short]))
    assert not np.allclose(both.lookup([long]), head.lookup([long]))
    model = TransformerEmbeddingModel(encoder={"name": encoder, "max_length": 16, "truncation": "head_tail"},
                                      finetuning=Frozen(), use_prompt_features=False, progress=False)
    model.build(["x", "y"], None)
    assert np.allclose(model.embed_prompts([long]).cpu().numpy(), both.lookup([long]), atol=1e-6)


def test_phase1_reads_record_texts_through_a_cold_cache(tiny_encoders, tmp_path):
    """A frozen-encoder router with a phase-1 LLM embedder, on an empty cache: phase 1 encodes its
    record texts into the cache too (it once looked them up only, and failed on a cold cache)."""
    cache = PromptCache.for_encoder(str(tiny_encoders["bert"]), 64, tmp_path)
    model = TransformerEmbeddingModel(encoder={"name": str(tiny_encoders["bert"]), "max_length": 64},
                                      finetuning=Frozen(), embedding_spec={"kind": "frozen", "dim": 8},
                                      embedding_model_epochs=1, epochs=1, progress=False)
    model.frozen_vectors = cache.vectors
    data = tiny_models.synthetic_scores(n_prompts=20)
    model.train(data, ValidationSplit(0.25, 0))
    assert len(cache) == 20 and not cache.missing(data["prompt"].to_pylist())


def test_a_router_reading_the_cache_still_gives_the_heads_inputs(tiny_encoders, tmp_path):
    cache = PromptCache.for_encoder(str(tiny_encoders["bert"]), 64, tmp_path)
    model = TransformerEmbeddingModel(encoder={"name": str(tiny_encoders["bert"]), "max_length": 64},
                                      finetuning=Frozen(), progress=False)
    model.build(["x", "y"], None)
    direct = model.prompt_vectors(["Solve 2x + 3 = 7."])
    model.frozen_vectors = cache.vectors
    cached = model.prompt_vectors(["Solve 2x + 3 = 7."])
    assert cached.shape == direct.shape == (1, 32 + 45)  # pooled vector + prompt features
    assert np.allclose(cached, direct, atol=1e-5)
