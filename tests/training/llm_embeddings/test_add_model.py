"""Adding an LLM to a trained router: `python -m training.add_model` on real data (the MIT
LLMRouter sample), the new bundle, the DuckDB `router_models` table, and the errors."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import routerdb
from routerdb.bundle import Bundle
from routerdb.router import Router
from training.add_model import add_model, main
from training.data import read as data_mod
from training.data.splits import split_by_prompt
from training.export import export_bundle
from training.llm_embeddings.records import comparison_records
from training.router import TransformerEmbeddingModel
from training.specs import Frozen

HELD_OUT = "qwen2.5-7b-instruct"
SPEC = {"kind": "frozen", "prompts_per_step": 16, "records_per_set": 16, "profile_records": 256,
        "hidden_dim": 32, "dim": 8}


def involves(pairs: pa.Table, name: str) -> np.ndarray:
    a = pairs["model_a"].to_numpy(zero_copy_only=False)
    b = pairs["model_b"].to_numpy(zero_copy_only=False)
    return (a == name) | (b == name)


@pytest.fixture(scope="module")
def split(sample_path):
    pairs = data_mod.load_pairs(sample_path)
    keep = sorted(set(pairs["prompt"].to_pylist()))[:200]
    pairs = pairs.filter(pc.is_in(pairs["prompt"], value_set=pa.array(keep)))
    return split_by_prompt(pairs, 0.25, 0)


def frozen_router(tiny_encoders) -> TransformerEmbeddingModel:
    return TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), finetuning=Frozen(),
                                     embedding_spec=SPEC, embedding_model_epochs=2, epochs=2, batch_size=256,
                                     progress=False)


@pytest.fixture(scope="module")
def built(tiny_encoders, split, sample_path, tmp_path_factory):
    """A frozen-embedding router trained without HELD_OUT, its run dir and bundle, and the
    training prompts' per-model scores (HELD_OUT's records among them) as a file."""
    train, val = split
    root = tmp_path_factory.mktemp("add_model")
    model = frozen_router(tiny_encoders)
    without = train.filter(pa.array(~involves(train, HELD_OUT)))
    model.train(without, validation_split=None, run_dir=root / "run")
    bundle = export_bundle(model, root / "bundle", val["prompt"].to_pylist()[:8])
    (root / "run" / "spec.json").write_text(json.dumps({"output": {"bundle_dir": str(bundle)}}))
    raw = pq.read_table(sample_path)
    records = root / "records.parquet"
    pq.write_table(raw.filter(pc.is_in(raw["prompt"], value_set=train["prompt"].unique())), records)
    return {"model": model, "run": root / "run", "bundle": bundle, "records": records, "root": root}


def test_bundle_carries_the_embedding_model_and_feature_stats(built):
    bundle = Bundle.load(built["bundle"])
    assert {"embedding_model.json", "embedding_model.safetensors"} <= set(bundle.manifest["files"])
    assert bundle.manifest["llm_embeddings"]["kind"] == "frozen"
    assert 0 <= bundle.manifest["llm_embeddings"]["identification_top1"] <= 1
    assert len(bundle.manifest["feature_stats"]["mean"]) == len(bundle.manifest["feature_names"]) == 45
    assert HELD_OUT not in bundle.model_names and len(bundle.model_names) == 8


def test_add_model_writes_a_bundle_that_scores_the_new_llm(built, split, tmp_path):
    out = add_model(built["bundle"], built["records"], HELD_OUT, tmp_path / "new")
    old, new = Bundle.load(built["bundle"]), Bundle.load(out)
    assert new.model_names == (*old.model_names, HELD_OUT)
    np.testing.assert_array_equal(new.model_embeddings[:-1], old.model_embeddings)
    train, _ = split
    expected = built["model"].llm_embedder.embed_llms(comparison_records(train).of(HELD_OUT), [HELD_OUT])
    np.testing.assert_allclose(new.model_embeddings[-1], expected[0], atol=1e-6)
    for name in ("model.onnx", "tokenizer.json"):
        assert new.manifest["files"][name]["sha256"] == old.manifest["files"][name]["sha256"]
    added = new.manifest["added_models"][-1]
    assert added["name"] == HELD_OUT and added["records"] == 8 * 150 and added["used_records"] == 256
    assert added["unknown_opponents"] == [] and new.manifest["models"]["count"] == 9
    assert new.manifest["add_model_check"]["max_abs_diff_known_llms"] <= 1e-5
    scores = Router.for_verification(out).score(["What is 2 + 2?"], [HELD_OUT])
    assert scores.shape == (1, 1) and -1 <= scores[0, 0] <= 1


def test_router_models_shows_name_and_embedding(built, tmp_path):
    out = add_model(built["bundle"], built["records"], HELD_OUT, tmp_path / "new")
    con = duckdb.connect()
    routerdb.register(con, out)
    rows = con.execute("SELECT model, embedding FROM router_models ORDER BY model").fetchall()
    bundle = Bundle.load(out)
    expected = sorted(zip(bundle.model_names, bundle.model_embeddings.tolist(), strict=True))
    assert [r[0] for r in rows] == [name for name, _ in expected]
    for (_, got), (_, want) in zip(rows, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    best = con.execute(f"SELECT route_score('Solve 3x = 9', '{HELD_OUT}')").fetchone()[0]
    assert -1 <= best <= 1


def test_add_from_a_run_directory_and_the_cli(built, tmp_path, capsys):
    out = str(tmp_path / "cli")
    code = main([str(built["run"]), str(built["records"]), "--name", HELD_OUT, "--out", out])
    assert code == 0 and f"{HELD_OUT} added" in capsys.readouterr().out
    assert Bundle.load(tmp_path / "cli").model_names[-1] == HELD_OUT


def test_errors_name_the_problem_and_the_fix(built, tiny_bundle, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"already in .*pick another --name, pass --refit"):
        add_model(built["bundle"], built["records"], "gemma-2-9b-it", tmp_path / "x")
    with pytest.raises(KeyError, match="no comparison records of LLM 'nobody'"):
        add_model(built["bundle"], built["records"], "nobody", tmp_path / "x")
    with pytest.raises(ValueError, match=r"no comparison record of this LLM against an LLM the router "
                                         r"knows \(3 known\); add records against some of them"):
        add_model(tiny_bundle, built["records"], HELD_OUT, tmp_path / "x")  # its LLMs: chat, coder, weak
    with pytest.raises(FileNotFoundError, match="neither a bundle"):
        add_model(tmp_path, built["records"], HELD_OUT, tmp_path / "x")
    args = [str(built["bundle"]), str(built["records"]), "--name", "nobody", "--out", str(tmp_path / "y")]
    assert main(args) == 2  # bad input: the records hold no such LLM
    err = capsys.readouterr().err
    assert err.count("error: no comparison records of LLM 'nobody'") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_damaged_embedding_model_in_a_bundle_is_refused(built, tmp_path):
    copy = shutil.copytree(built["bundle"], tmp_path / "copy")
    with open(copy / "embedding_model.safetensors", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="altered or damaged"):
        add_model(copy, built["records"], HELD_OUT, tmp_path / "x")


def test_held_out_llm_added_back_is_scored_on_unseen_prompts(built, split, tiny_encoders):
    """The real-data experiment in miniature: pairwise accuracy of the held-out LLM's validation
    pairs, added back vs trained with it (bench/embeddings.py runs it at full size)."""
    train, val = split
    with_it = frozen_router(tiny_encoders)
    with_it.train(train, validation_split=None)
    pairs = val.filter(pa.array(involves(val, HELD_OUT) & (val["label"].to_numpy() != 0)))
    prompts = pairs["prompt"].to_pylist()
    added = Router(add_model(built["bundle"], built["records"], HELD_OUT, built["root"] / "added"))
    accuracy = {}
    for label, scores in (("added", added.score_pairs(prompts, pairs["model_a"].to_pylist())
                           - added.score_pairs(prompts, pairs["model_b"].to_pylist())),
                          ("trained with it", _pair_diff(with_it, pairs))):
        accuracy[label] = float(np.mean(np.sign(scores) == pairs["label"].to_numpy()))
    assert len(pairs) > 100
    assert accuracy["added"] > 0.5 and accuracy["trained with it"] > 0.5  # 0.76 and 0.70 when written


def _pair_diff(model, pairs: pa.Table) -> np.ndarray:
    prompts = sorted(set(pairs["prompt"].to_pylist()))
    matrix = model.score_matrix(prompts)
    row = {p: i for i, p in enumerate(prompts)}
    col = {m: j for j, m in enumerate(model.llm_names)}
    rows = [row[p] for p in pairs["prompt"].to_pylist()]
    return (matrix[rows, [col[m] for m in pairs["model_a"].to_pylist()]]
            - matrix[rows, [col[m] for m in pairs["model_b"].to_pylist()]])


@pytest.fixture(scope="module")
def learned(tiny_encoders, split, built):
    """Routers of learned LLM vectors (the recommended kind), without and with HELD_OUT."""
    train, val = split
    out = {}
    for name, data in (("without", train.filter(pa.array(~involves(train, HELD_OUT)))), ("with", train)):
        model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), finetuning=Frozen(), epochs=3,
                                          batch_size=256, loss={"kind": "bradley_terry", "ties": "half"},
                                          progress=False)
        model.train(data, validation_split=None)
        out[name] = model
    out["bundle"] = export_bundle(out["without"], built["root"] / "learned", val["prompt"].to_pylist()[:8])
    return out


def test_a_learned_router_takes_a_new_llm_fitted_against_its_head(learned, built, split, tmp_path):
    _, val = split
    new = Router(add_model(learned["bundle"], built["records"], HELD_OUT, tmp_path / "added"))
    old = Router(learned["bundle"])
    assert new.models == (*old.models, HELD_OUT)
    manifest = Bundle.load(tmp_path / "added").manifest
    assert manifest["added_models"][-1]["row"] == "fitted against the head"
    pairs = val.filter(pa.array(involves(val, HELD_OUT) & (val["label"].to_numpy() != 0)))
    prompts = pairs["prompt"].to_pylist()
    added = new.score_pairs(prompts, pairs["model_a"].to_pylist()) - new.score_pairs(
        prompts, pairs["model_b"].to_pylist())
    label = pairs["label"].to_numpy()
    accuracy = {"added": float(np.mean(np.sign(added) == label)),
                "trained with it": float(np.mean(np.sign(_pair_diff(learned["with"], pairs)) == label))}
    assert len(pairs) > 100 and accuracy["added"] > 0.5, accuracy
    assert accuracy["added"] > accuracy["trained with it"] - 0.1, accuracy


def test_few_records_keep_the_new_row_near_the_average_llm(learned, built, tmp_path):
    from training.add_model import fitted_row

    loaded = Bundle.load(learned["bundle"])
    records = comparison_records(data_mod.load_pairs(built["records"])).of(HELD_OUT)
    mean = loaded.model_embeddings.mean(0)
    few = fitted_row(loaded, records.take(np.arange(4)))
    many = fitted_row(loaded, records)
    assert np.linalg.norm(few - mean) < np.linalg.norm(many - mean)  # the prior holds back 4 records


def test_a_bundle_without_head_weights_says_re_export(learned, built):
    import dataclasses

    from training.add_model import fitted_row

    loaded = Bundle.load(learned["bundle"])  # the process's verified copy: change a copy, not it
    loaded = dataclasses.replace(loaded, manifest={k: v for k, v in loaded.manifest.items() if k != "head"})
    records = comparison_records(data_mod.load_pairs(built["records"])).of(HELD_OUT)
    with pytest.raises(ValueError, match="neither an LLM embedder nor the head's weights .* re-export it"):
        fitted_row(loaded, records)


def test_the_row_fit_runs_on_its_own_thread_count(learned, built, tmp_path, monkeypatch):
    import torch

    import training.add_model as am

    seen = []
    real = am.fit_llm_row
    monkeypatch.setattr(am, "fit_llm_row",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(4)  # the default pool on a 4-core machine: on a busy one it ran 12x slower
    try:
        add_model(learned["bundle"], built["records"], HELD_OUT, tmp_path / "t")
        assert seen == [am.TORCH_THREADS] == [1] and torch.get_num_threads() == 4  # the caller's, restored
    finally:
        torch.set_num_threads(before)


def test_a_non_empty_out_is_refused_before_any_work_in_this_commands_words(built, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    args = [str(built["bundle"]), str(built["records"]), "--name", HELD_OUT, "--out", str(tmp_path / "notes")]
    assert main(args) == 2  # bad input
    err = capsys.readouterr().err
    assert "not a routerdb bundle" in err and "(--out)" in err and "output.bundle_dir" not in err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
