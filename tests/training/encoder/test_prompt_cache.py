"""training.encoder.prompt_cache: frozen prompt vectors stored once, read back exactly, used by the
trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.encoder.prompt_cache import PromptCache, attach


def test_fill_lookup_reload_and_attach(tiny_encoders, tmp_path):
    from training.model.router import TransformerEmbeddingModel
    from training.specs import Frozen

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
    model._build(["x", "y"], None)
    direct = model.embed_prompts(prompts).cpu().numpy()
    assert np.allclose(direct, vectors, atol=1e-6)  # the cache holds what the trainer computes
    attach(model, again)
    got = model.embed_prompts(prompts + ["never seen"])  # a miss is encoded and stored
    assert isinstance(got, torch.Tensor) and got.shape == (4, 32) and len(again) == 3


def test_switching_truncation_re_encodes_only_the_prompts_that_were_cut(tiny_encoders, tmp_path):
    from training.model.router import TransformerEmbeddingModel
    from training.specs import Frozen

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
    model._build(["x", "y"], None)
    assert np.allclose(model.embed_prompts([long]).cpu().numpy(), both.lookup([long]), atol=1e-6)
