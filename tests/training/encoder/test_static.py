"""The static encoder tier: distilled from a tiny local BERT, trained frozen or whole, exported to
ONNX (a Gather and mean pooling, no transformer), verified against torch, served through SQL."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import onnx
import pytest
import torch
from safetensors.numpy import save_file
from tokenizers import Tokenizer

import routerdb
from routerdb import router as router_module
from tests import tiny_models
from training.encoder import static, static_distill
from training.encoder.finetuning import FineTuningError
from training.export import export_bundle
from training.preflight import problems
from training.router import TransformerEmbeddingModel
from training.specs import EncoderSpec, Frozen, Full, LoRA, SpecError, ValidationSplit, parse_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["Write a Python function that reverses a linked list.", "What is the capital of France?",
           "", "Prove that the square root of 2 is irrational. " * 20]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    root = tmp_path / "static-cache"
    monkeypatch.setattr(static_distill, "CACHE_ROOT", root)
    return root


def _static_router(source, finetuning, **fields) -> TransformerEmbeddingModel:
    encoder = EncoderSpec(kind="static", name=str(source), static_dims=16)
    model = TransformerEmbeddingModel(encoder=encoder, finetuning=finetuning, epochs=2, batch_size=32,
                                      progress=False, **fields)
    model.train(tiny_models.synthetic_scores(), validation_split=ValidationSplit(0.25, 0))
    return model


def test_distilled_table_is_model2vecs_recipe_on_the_tiny_bert(tiny_encoders, cache):
    ref = static_distill.resolve_static(str(tiny_encoders["bert"]), 16)
    folder = ref.local_dir
    assert ref.kind == "static" and ref.origin == "distilled" and folder.parent == cache
    assert static.is_static_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "model2vec" and config["apply_pca"] == 16
    table = static.read_table(folder)
    tok = Tokenizer.from_file(str(tiny_encoders["bert"] / "tokenizer.json"))
    assert table.shape == (tok.get_vocab_size(), 16)
    specials = [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    assert not table[specials].any()  # special tokens: zero rows
    kept = np.delete(np.arange(len(table)), specials)
    # PCA scores are centred and uncorrelated; SIF only rescales rows, so undo it to check
    unweighted = table[kept] / static_distill._sif_weights(len(kept))[:, None]
    np.testing.assert_allclose(unweighted.mean(0), 0, atol=1e-4)
    cov = np.cov(unweighted.T)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-4)
    assert np.all(np.diff(np.diag(cov)) <= 1e-6)  # variance explained in decreasing order


def test_a_distilled_table_is_read_from_the_cache_not_distilled_again(tiny_encoders, cache, monkeypatch):
    first = static_distill.resolve_static(str(tiny_encoders["bert"]), 8)
    table = static.read_table(first.local_dir)

    def fail(*args):
        raise AssertionError("distilled a second time")

    monkeypatch.setattr(static_distill, "distill_table", fail)
    again = static_distill.resolve_static(str(tiny_encoders["bert"]), 8)
    assert again.local_dir == first.local_dir
    np.testing.assert_array_equal(static.read_table(again.local_dir), table)


def test_static_dims_above_the_transformers_width_is_an_error(tiny_encoders, cache):
    with pytest.raises(ValueError, match=r"static_dims is 64 but .* has 32 dimensions.*at most 32"):
        static_distill.resolve_static(str(tiny_encoders["bert"]), 64)


@pytest.mark.parametrize("finetuning", [Frozen(), Full(lr=1e-3)], ids=["frozen", "full"])
def test_static_router_trains_exports_and_scores_through_sql(tiny_encoders, cache, tmp_path, finetuning):
    model = _static_router(tiny_encoders["bert"], finetuning)
    distilled = torch.from_numpy(static.read_table(model.encoder_ref.local_dir))
    tuned = model.net.encoder.embed_tokens.weight.detach().cpu()
    assert tuned.equal(distilled) == (finetuning.kind == "frozen")  # "full" tunes the table
    assert model.history[-1]["val_accuracy"] >= 0.85 # the synthetic task is learnable from the text

    bundle = export_bundle(model, tmp_path / "bundle", PROMPTS)  # written only if ONNX matches torch
    ops = {node.op_type for node in onnx.load(str(bundle / "model.onnx")).graph.node}
    assert "Gather" in ops and "Softmax" not in ops  # a table lookup, no attention
    manifest = routerdb.Bundle.load(bundle).manifest
    assert manifest["pooling"] == "mean" and manifest["pooling_detail"]["normalize"]
    assert manifest["spec"]["encoder"]["kind"] == "static"
    con = duckdb.connect()
    routerdb.register(con, bundle)
    con.execute("CREATE TABLE prompts AS SELECT unnest(?) AS prompt", [PROMPTS])
    rows = con.execute("SELECT prompt, model, route_score(prompt, model) FROM prompts "
                       "CROSS JOIN router_models").fetchall()
    got = {(p, m): s for p, m, s in rows}
    expected = model.predict(PROMPTS)
    for name, values in expected.items():
        np.testing.assert_allclose([got[(p, name)] for p in PROMPTS], values, atol=1e-5)


def test_tuned_static_router_reloads_from_its_checkpoint(tiny_encoders, cache, tmp_path):
    model = _static_router(tiny_encoders["bert"], Full(lr=1e-3))
    model.save(tmp_path / "ckpt")
    again = TransformerEmbeddingModel.load(tmp_path / "ckpt")
    np.testing.assert_allclose(again.score_matrix(PROMPTS), model.score_matrix(PROMPTS), atol=1e-6)


def test_static_prompts_are_tokenised_without_special_tokens(tiny_encoders, cache):
    model = TransformerEmbeddingModel(encoder=EncoderSpec(kind="static", name=str(tiny_encoders["bert"]),
                                                          static_dims=8), finetuning=Frozen())
    model.build(["a", "b"], None)
    tok = Tokenizer.from_file(str(tiny_encoders["bert"] / "tokenizer.json"))
    bare = tok.encode("what is the capital of france?", add_special_tokens=False).ids
    assert model.token_ids(["What is the capital of France?"]) == [bare]


def test_a_local_model2vec_folder_is_read_with_its_weights(tiny_encoders, tmp_path, cache):
    folder = tmp_path / "m2v"
    folder.mkdir()
    (folder / "tokenizer.json").write_text((tiny_encoders["bert"] / "tokenizer.json").read_text())
    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
    rng = np.random.default_rng(0)
    emb, weights = rng.normal(size=(vocab, 6)).astype(np.float32), rng.random(vocab).astype(np.float32)
    save_file({"embeddings": emb, "weights": weights}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "model2vec", "normalize": False}))

    ref = static_distill.resolve_static(str(folder), 256)  # static_dims: only for distilling
    assert (ref.origin, ref.local_dir) == ("local", folder)
    assert not cache.exists()  # nothing distilled
    model = TransformerEmbeddingModel(encoder=EncoderSpec(kind="static", name=str(folder)),
                                      finetuning=Frozen())
    model.build(["a", "b"], None)
    np.testing.assert_allclose(model.net.encoder.embed_tokens.weight.detach().cpu().numpy(),
                               emb * weights[:, None], rtol=1e-6)
    assert (model.net.pooling.mode, model.net.pooling.normalize) == ("mean", False)


def test_a_model2vec_folder_with_fewer_rows_than_tokens_is_refused(tiny_encoders, tmp_path):
    folder = tmp_path / "short"
    folder.mkdir()
    (folder / "tokenizer.json").write_text((tiny_encoders["bert"] / "tokenizer.json").read_text())
    save_file({"embeddings": np.zeros((3, 4), np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "model2vec"}))
    with pytest.raises(static.StaticEncoderError, match=r"has 3 rows but tokenizer.json has \d+ tokens"):
        static.load_static_encoder(folder)


def test_transformer_only_finetuning_is_refused_for_a_static_encoder(tiny_encoders, cache, tmp_path):
    model = TransformerEmbeddingModel(encoder=EncoderSpec(kind="static", name=str(tiny_encoders["bert"]),
                                                          static_dims=8), finetuning=LoRA())
    with pytest.raises(FineTuningError, match=r"'lora' needs a transformer.*'frozen'.*'full'"):
        model.build(["a", "b"], None)
    spec = parse_spec({"data": {"train": [str(tmp_path / "x.parquet")]},
                       "output": {"run_dir": str(tmp_path / "r"), "bundle_dir": str(tmp_path / "b")},
                       "encoder": {"kind": "static", "name": str(tiny_encoders["bert"])},
                       "finetuning": {"kind": "last_layers"}})
    assert any(p.startswith("finetuning.kind: 'last_layers' needs a transformer") for p in problems(spec))


def test_static_encoder_pools_by_mean_only():
    with pytest.raises(SpecError, match=r"'static' averages its token vectors, but encoder.pooling is 'cls'"):
        parse_spec({"data": {"train": ["x"]}, "output": {"run_dir": "r", "bundle_dir": "b"},
                    "encoder": {"kind": "static", "pooling": "cls"}})


def test_a_router_without_prompt_features_exports_and_serves_without_computing_them(
        tiny_encoders, cache, tmp_path, monkeypatch):
    model = _static_router(tiny_encoders["bert"], Frozen(), use_prompt_features=False)
    bundle = export_bundle(model, tmp_path / "bundle", PROMPTS)
    assert routerdb.Bundle.load(bundle).manifest["graph"]["inputs"] == [
        "input_ids", "attention_mask", "model_embeddings"]

    def fail(texts):
        raise AssertionError("computed features for a graph that does not read them")

    router = routerdb.Router(bundle)
    monkeypatch.setattr(router_module, "compute_features", fail)
    np.testing.assert_allclose(router.score(PROMPTS), model.score_matrix(PROMPTS), atol=1e-5)
