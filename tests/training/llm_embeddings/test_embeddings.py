"""The LLM embedding model (phase 1): records, triplets, every kind on real data, persistence,
and its integration with the router (fixed or trained with the head, reuse, resume)."""

from __future__ import annotations

import json
import logging
import math
import typing

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from pydantic import TypeAdapter

from training import specs
from training.data import read as data_mod
from training.data.splits import model_counts, split_by_prompt
from training.encoder.pretrained import resolve_encoder
from training.encoder.text_encoder import TextEncoder
from training.formats import EMBEDDER_CONFIG, EMBEDDER_WEIGHTS
from training.llm_embeddings import embedder as embeddings
from training.llm_embeddings import phase1, records
from training.router import TransformerEmbeddingModel
from training.specs import Frozen, ValidationSplit

PHASE1_KINDS = ("frozen", "finetunable", "attention")
SMALL = {"prompts_per_step": 16, "records_per_set": 16, "profile_records": 64, "hidden_dim": 32, "dim": 8}


def small_spec(kind: str, **extra):
    fields = {"kind": kind, **SMALL, **({"heads": 2} if kind == "attention" else {}), **extra}
    return TypeAdapter(specs.EmbeddingSpec).validate_python(fields)


@pytest.fixture(scope="module")
def sample_pairs(sample_path) -> pa.Table:
    """Real data (the MIT LLMRouter sample): 120 of its prompts x 9 LLMs, as pairs."""
    pairs = data_mod.load_pairs(sample_path)
    keep = sorted(set(pairs["prompt"].to_pylist()))[:120]
    return pairs.filter(pc.is_in(pairs["prompt"], value_set=pa.array(keep)))


def tiny_pairs() -> pa.Table:
    return pa.table({"prompt": ["p1", "p1", "p2"], "model_a": ["x", "x", "y"], "model_b": ["y", "z", "z"],
                     "label": pa.array([1, 0, -1], pa.int8()), "source": ["s"] * 3})


# --- registry and spec --------------------------------------------------------------------------


def test_registry_matches_the_spec_union():
    members = typing.get_args(typing.get_args(specs.EmbeddingSpec)[0])
    assert {m.model_fields["kind"].default for m in members} == set(embeddings.KINDS)
    assert [k for k, v in embeddings.KINDS.items() if not v.phase1] == ["learned"]


def test_spec_rejects_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match="hidden_dim 30 is not divisible by heads 4"):
        specs.RouterConfig(embedding_spec={"kind": "attention", "hidden_dim": 30})


def test_spec_is_closed():
    with pytest.raises(ValueError, match="opponent_dim"):
        specs.RouterConfig(embedding_spec={"kind": "frozen", "opponent_dim": 8})


# --- records and triplets -----------------------------------------------------------------------


def test_two_records_per_pair_with_signed_outcomes():
    r = records.comparison_records(tiny_pairs())
    assert r.llms == ("x", "y", "z")
    got = sorted((r.llms[i], r.prompts[p], r.llms[o], int(w))
                 for i, p, o, w in zip(r.llm, r.prompt, r.opponent, r.outcome, strict=True))
    assert got == [("x", "p1", "y", 1), ("x", "p1", "z", 0), ("y", "p1", "x", -1), ("y", "p2", "z", -1),
                   ("z", "p1", "x", 0), ("z", "p2", "y", 1)]
    assert r.texts == ("p1", "p2")
    assert r.counts() == {"x": 2, "y": 2, "z": 2}


def test_response_text_is_used_when_present():
    pairs = tiny_pairs().append_column("response_a", pa.array(["ra", None, "rc"]))
    r = records.comparison_records(pairs.append_column("response_b", pa.array(["rb", "rz", None])))
    texts = sorted({(r.llms[i], r.texts[t]) for i, t in zip(r.llm, r.text, strict=True)})
    assert ("x", "p1\n\nra") in texts and ("y", "p1\n\nrb") in texts and ("z", "p1\n\nrz") in texts
    assert ("x", "p1") in texts and ("y", "p2\n\nrc") in texts and ("z", "p2") in texts


def test_responses_flow_from_both_data_schemas_into_record_texts():
    scores = pa.table({"prompt": ["q", "q"], "model": ["x", "y"], "score": [1.0, 0.0],
                       "response": ["4", None]})
    r = records.comparison_records(data_mod.load_pairs(scores))
    texts = {(r.llms[i], r.texts[t]) for i, t in zip(r.llm, r.text, strict=True)}
    assert texts == {("x", "q\n\n4"), ("y", "q")}
    pairwise = pa.table({"prompt": ["q"], "model_a": ["x"], "model_b": ["y"], "winner": ["model_b"],
                         "response_a": ["no"], "response_b": ["yes"]})
    r = records.comparison_records(data_mod.load_pairs(pairwise))
    assert sorted(r.texts) == ["q\n\nno", "q\n\nyes"]


def test_unknown_llm_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"no comparison records of LLM 'w'.*3 LLM\(s\): x, y, z"):
        records.comparison_records(tiny_pairs()).of("w")


def test_win_rates_ignore_ties():
    assert records.win_rates(records.comparison_records(tiny_pairs())) == {"x": 1.0, "y": 0.0, "z": 1.0}


def test_split_by_prompt_is_disjoint(sample_pairs):
    r = records.comparison_records(sample_pairs)
    fit, held = records.split_records(r, 0.25, 0)
    assert len(fit) + len(held) == len(r)
    assert not set(fit.prompt) & set(held.prompt)
    assert len(np.unique(held.prompt)) == 30


def test_triplet_steps_pair_sets_of_one_llm_on_disjoint_prompts(sample_pairs):
    r = records.comparison_records(sample_pairs)
    steps = list(records.triplet_steps(r, 16, 10, np.random.default_rng(0)))
    assert len(steps) == math.ceil(120 / 16)
    seen_prompts = []
    for step in steps:
        assert step.anchor.shape == step.positive.shape == (len(step.llm), 10)
        assert len(set(step.llm)) == len(step.llm) >= 2
        for n, llm in enumerate(step.llm):
            a, p = step.anchor[n][step.anchor[n] >= 0], step.positive[n][step.positive[n] >= 0]
            assert (r.llm[a] == llm).all() and (r.llm[p] == llm).all()
            assert not set(r.prompt[a]) & set(r.prompt[p])
        rows = np.concatenate([step.anchor, step.positive]).ravel()
        seen_prompts.append(set(r.prompt[rows[rows >= 0]]))
    assert all(not (x & y) for i, x in enumerate(seen_prompts) for y in seen_prompts[i + 1:])


def test_batch_all_triplet_loss_pinned():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(phase1.batch_all_triplet_loss(a, a, 0.2)) == 0.0  # d(a,p)=0, d(a,n)=1 > margin
    swapped = a.flip(0)  # every positive is the other LLM's: d(a,p)=1, d(a,n)=0
    assert float(phase1.batch_all_triplet_loss(a, swapped, 0.2)) == pytest.approx(1.2)


def test_identification_sets_and_profiles_are_seeded(sample_pairs):
    r = records.comparison_records(sample_pairs)
    s1, t1 = records.identification_sets(r, 3, 5, seed=1)
    s2, t2 = records.identification_sets(r, 3, 5, seed=1)
    np.testing.assert_array_equal(s1, s2)
    assert s1.shape == (27, 5) and list(t1) == [i for i in range(9) for _ in range(3)]
    rows = records.profile_rows(r, 0, 50, seed=0)
    assert len(rows) == 50 and (r.llm[rows] == 0).all()
    np.testing.assert_array_equal(rows, records.profile_rows(r, 0, 50, seed=0))


# --- every kind trains on real data --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_encoders, sample_pairs):
    train, _ = split_by_prompt(sample_pairs, 0.2, 0)
    encoder = str(tiny_encoders["bert"])
    return {kind: phase1.train_embedding_model(small_spec(kind), train, encoder=encoder, epochs=2, seed=0)
            for kind in PHASE1_KINDS}


@pytest.mark.parametrize("kind", PHASE1_KINDS)
def test_every_kind_trains_and_reports_identification(trained, kind):
    model = trained[kind]
    report = model.report
    assert report["llms"] == 9 and report["chance"] == pytest.approx(1 / 9)
    assert report["records_per_set"] == 16 and report["query_sets_per_llm"] == 20
    assert 0.0 <= report["identification_top1"] <= 1.0
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    assert all(math.isfinite(h["triplet_loss"]) for h in report["history"])
    assert report["identification_top1"] > report["chance"]  # outcomes alone identify above chance


def test_finetunable_trains_its_encoder(trained, tiny_encoders):
    fresh = TextEncoder(resolve_encoder(str(tiny_encoders["bert"])), 128,
                                   finetuning=specs.LastLayers(num_layers=1))
    tuned = dict(trained["finetunable"].text.encoder.named_parameters())
    changed = [n for n, p in fresh.encoder.named_parameters() if p.requires_grad
               and not torch.equal(p, tuned[n].detach().cpu())]
    assert changed and all(".1." in n for n in changed)  # only the last of the 2 blocks


@pytest.mark.parametrize("kind", PHASE1_KINDS)
def test_save_load_round_trip(trained, kind, sample_pairs, tmp_path):
    model = trained[kind]
    r = records.comparison_records(sample_pairs)
    before = model.embed_llms(r)
    assert before.shape == (9, 8)
    np.testing.assert_allclose(np.linalg.norm(model.raw_embeddings(r), axis=1), 1.0, rtol=1e-5)
    train, _ = split_by_prompt(sample_pairs, 0.2, 0)  # what phase 1 was trained on
    np.testing.assert_allclose(model.embed_llms(records.comparison_records(train))[:, :-1].mean(0), 0.0,
                               atol=1e-4)  # centred on the phase-1 LLMs
    theta = records.bt_strengths(r)
    assert np.argsort(before[:, -1]).tolist() == np.argsort([theta[n] for n in r.llms]).tolist()
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [EMBEDDER_CONFIG, EMBEDDER_WEIGHTS]
    meta = json.loads((tmp_path / "embedding_model.json").read_text())
    assert meta["format"] == "routerdb-embedding-model" and meta["kind"] == kind
    assert meta["report"]["identification_top1"] == model.report["identification_top1"]
    assert "torch" in meta["library_versions"]
    np.testing.assert_allclose(embeddings.LLMEmbedder.load(tmp_path).embed_llms(r), before, atol=1e-5)


def test_load_refuses_newer_and_foreign_files(trained, tmp_path):
    trained["frozen"].save(tmp_path)
    meta = json.loads((tmp_path / "embedding_model.json").read_text())
    (tmp_path / "embedding_model.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99 is newer"):
        embeddings.LLMEmbedder.load(tmp_path)
    (tmp_path / "embedding_model.json").write_text(json.dumps({**meta, "format": "x"}))
    with pytest.raises(ValueError, match="not a routerdb LLM embedding model"):
        embeddings.LLMEmbedder.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no LLM embedding model.*kind 'learned' has no such model"):
        embeddings.LLMEmbedder.load(tmp_path / "nowhere")


def test_an_llm_without_records_gets_the_average_embedding(trained, sample_pairs, caplog):
    r = records.comparison_records(sample_pairs)
    with caplog.at_level(logging.WARNING):
        out = trained["frozen"].embed_llms(r, ["gemma-2-9b-it", "not-there"])
    assert out[0].any() and not out[1].any()  # 0 is the average LLM
    assert "no comparison records of not-there: it gets the average LLM's embedding" in caplog.text


# --- the router with phase-1 embeddings --------------------------------------------------------


def router(tiny_encoders, kind: str, **fields) -> TransformerEmbeddingModel:
    return TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), finetuning=Frozen(),
                                     embedding_spec=small_spec(kind, **fields.pop("spec", {})),
                                     embedding_model_epochs=1, epochs=1, batch_size=256, progress=False,
                                     **fields)


def test_router_uses_the_phase1_embeddings_fixed(tiny_encoders, sample_pairs, tmp_path, caplog):
    model = router(tiny_encoders, "frozen")
    with caplog.at_level(logging.INFO):
        model.train(sample_pairs, ValidationSplit(0.2, 0), run_dir=tmp_path / "run")
    assert "held-out top-1 identification" in caplog.text
    train, _ = split_by_prompt(sample_pairs, 0.2, 0)
    expected = model.llm_embedder.embed_llms(records.comparison_records(train), model.llm_names)
    np.testing.assert_allclose(model.llm_embeddings.cpu().numpy(), expected, atol=1e-6)
    assert not any(p is model.llm_embeddings for p in model.head_parameters())
    saved = json.loads((tmp_path / "run" / "checkpoint" / "router.json").read_text())
    assert saved["embedding_model"]["kind"] == "frozen"
    top1 = model.llm_embedder.report["identification_top1"]
    assert saved["embedding_model"]["identification_top1"] == top1
    loaded = TransformerEmbeddingModel.load(tmp_path / "run" / "checkpoint")
    assert loaded.llm_embedder is not None
    prompts = sample_pairs["prompt"].to_pylist()[:5]
    np.testing.assert_allclose(loaded.score_matrix(prompts), model.score_matrix(prompts), atol=1e-6)


def test_train_with_head_keeps_phase1_and_head_consistent(tiny_encoders, sample_pairs, tmp_path):
    model = router(tiny_encoders, "attention", spec={"train_with_head": True})
    model.train(sample_pairs, ValidationSplit(0.2, 0), run_dir=tmp_path / "run")
    assert any(p.requires_grad for p in model.llm_table.parameters())
    train, _ = split_by_prompt(sample_pairs, 0.2, 0)
    r = records.comparison_records(train)
    with torch.no_grad():
        table = model.llm_embeddings.cpu().numpy()
    # the saved (co-trained) phase-1 model embeds the LLMs exactly as the head saw them
    again = embeddings.LLMEmbedder.load(tmp_path / "run").embed_llms(r, model.llm_names)
    np.testing.assert_allclose(again, table, rtol=1e-4, atol=1e-4)  # whitening amplifies float noise
    loaded = TransformerEmbeddingModel.load(tmp_path / "run" / "checkpoint")
    # recomputed from the records through the whitening: float noise of a few 1e-6 (seen in CI)
    np.testing.assert_allclose(loaded.llm_embeddings.cpu().numpy(), table, rtol=1e-4, atol=1e-4)


def test_load_embedding_model_from_skips_phase1(tiny_encoders, sample_pairs, tmp_path, caplog):
    first = router(tiny_encoders, "frozen")
    first.train(sample_pairs, ValidationSplit(0.2, 0), run_dir=tmp_path / "run")
    second = router(tiny_encoders, "frozen", load_embedding_model_from=str(tmp_path / "run"))
    caplog.clear()  # only the second run's log (the root level may be INFO from an earlier test)
    with caplog.at_level(logging.INFO):
        second.train(sample_pairs, ValidationSplit(0.2, 0))
    assert "loaded from" in caplog.text and "phase 1 (frozen) epoch" not in caplog.text
    np.testing.assert_allclose(second.llm_embeddings.cpu().numpy(), first.llm_embeddings.cpu().numpy())


def test_min_model_comparisons_drops_rare_llms_with_a_log(tiny_encoders, sample_pairs, caplog):
    involved = np.isin(sample_pairs["model_a"].to_numpy(zero_copy_only=False), ["codegemma-7b"]) | np.isin(
        sample_pairs["model_b"].to_numpy(zero_copy_only=False), ["codegemma-7b"])
    rare = sample_pairs.filter(pa.array(~involved | (np.arange(len(involved)) % 10 == 0)))
    counts = model_counts(rare)
    assert counts["codegemma-7b"] < 200 < min(v for k, v in counts.items() if k != "codegemma-7b")
    model = router(tiny_encoders, "frozen", min_model_comparisons=200)
    with caplog.at_level(logging.INFO):
        model.train(rare, ValidationSplit(0.2, 0))
    assert "dropped 1 LLM(s) with fewer than 200 comparisons: codegemma-7b" in caplog.text
    assert "codegemma-7b" not in model.llm_names and len(model.llm_names) == 8


def test_strength_of_one_llm_given_its_opponents():
    # x beats y (strength 0) 30 times of 40: the MLE is logit(0.75) = 1.0986, shrunk a little by l2
    pairs = pa.table({"prompt": [f"p{i}" for i in range(40)], "model_a": ["x"] * 40, "model_b": ["y"] * 40,
                      "label": pa.array([1] * 30 + [-1] * 10, pa.int8()), "source": ["s"] * 40})
    r = records.comparison_records(pairs).of("x")
    assert records.strength_given(r, {"y": 0.0}, l2=1e-9) == pytest.approx(math.log(3), rel=1e-6)
    assert 0 < records.strength_given(r, {"y": 0.0}) < math.log(3)
    assert records.strength_given(r, {"y": 1.0}, l2=1e-9) == pytest.approx(1 + math.log(3), rel=1e-6)
