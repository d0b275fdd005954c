"""Train -> save/load -> export -> score from Python and DuckDB, for BERT, Llama and GPT-2 shapes."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

import routerdb
from tests import tiny_models
from training.export import export_bundle
from training.router import TransformerEmbeddingModel
from training.specs import LoRA, ValidationSplit

PROMPTS = [
    "Write a Python function that reverses a linked list.",
    "What is the capital of France? Answer briefly.",
    "Summarise the plot of Hamlet in three sentences. " * 30,  # longer than max_length: truncated
    "",
    "x",
]


@pytest.fixture(scope="module", params=tiny_models.KINDS)
def trained(request, tiny_encoders, tmp_path_factory):
    # the Llama run also carries the head's linear LLM strength through export
    model = TransformerEmbeddingModel(encoder=str(tiny_encoders[request.param]), finetuning=LoRA(rank=4),
                                      head={"llm_strength": request.param == "llama"},
                                      epochs=1, batch_size=32, progress=False)
    history = model.train(tiny_models.synthetic_scores(40), validation_split=ValidationSplit(0.25, 0))
    bundle = export_bundle(model, tmp_path_factory.mktemp(request.param) / "bundle", PROMPTS)
    return request.param, model, bundle, history


def test_history_has_validation_metrics(trained):
    _, _, _, history = trained
    assert len(history) == 1
    assert 0.0 <= history[0]["val_accuracy"] <= 1.0 and np.isfinite(history[0]["val_loss"])


def test_predict_shape_and_range(trained):
    _, model, _, _ = trained
    scores = model.predict(PROMPTS)
    assert set(scores) == {"chat", "coder", "weak"}
    for values in scores.values():
        assert values.shape == (len(PROMPTS),) and np.all(np.abs(values) <= 1.0)


def test_bundle_scores_equal_predict(trained):
    _, model, bundle, _ = trained
    expected = np.stack([v for v in model.predict(PROMPTS).values()], axis=1)
    got = routerdb.Router(bundle).score(PROMPTS, list(model.llm_names))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_duckdb_scores_equal_predict(trained):
    _, model, bundle, _ = trained
    expected = model.predict(PROMPTS)
    con = duckdb.connect()
    routerdb.register(con, bundle)
    con.execute("CREATE TABLE logs AS SELECT unnest(?) AS prompt", [PROMPTS])
    rows = con.execute("SELECT prompt, model, route_score(prompt, model) FROM logs CROSS JOIN router_models"
                       ).fetchall()
    assert len(rows) == len(PROMPTS) * 3
    for prompt, name, score in rows:
        assert score == pytest.approx(float(expected[name][PROMPTS.index(prompt)]), abs=1e-4)


def test_save_load_roundtrip(trained, tmp_path):
    _, model, _, _ = trained
    model.save(tmp_path / "ckpt")
    again = TransformerEmbeddingModel.load(tmp_path / "ckpt")
    for name, values in model.predict(PROMPTS).items():
        np.testing.assert_allclose(again.predict(PROMPTS)[name], values, atol=1e-6)
    assert again.history == model.history
