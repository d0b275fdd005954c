"""The demo path with the real packaged all-MiniLM-L6-v2: spec -> fit -> bundle -> DuckDB SQL."""

from __future__ import annotations

import duckdb
import numpy as np

import routerdb
from training.router import TransformerEmbeddingModel


def test_demo_spec_end_to_end_with_packaged_minilm(demo_run):
    tmp_path = demo_run  # the demo spec trained on a slice of the shipped sample (tests/conftest.py)
    bundle = routerdb.Bundle.load(tmp_path / "bundle")
    assert bundle.manifest["encoder"]["origin"] == "packaged"
    assert bundle.manifest["pooling"] == "mean" and bundle.manifest["pooling_detail"]["normalize"]
    assert len(bundle.model_names) == 9
    model = TransformerEmbeddingModel.load(tmp_path / "run" / "checkpoint")
    prompts = ["Write a Python function that checks whether a number is prime.",
               "What is the boiling point of water at sea level in Fahrenheit?"]
    expected = model.predict(prompts)
    con = duckdb.connect()
    routerdb.register(con, tmp_path / "bundle")
    con.execute("CREATE TABLE prompts AS SELECT unnest(?) AS prompt", [prompts])
    rows = con.execute("SELECT prompt, model, route_score(prompt, model) FROM prompts "
                       "CROSS JOIN router_models").fetchall()
    assert len(rows) == 18
    got = {(p, m): s for p, m, s in rows}
    for name, values in expected.items():
        np.testing.assert_allclose([got[(p, name)] for p in prompts], values, atol=1e-4)
    assert (tmp_path / "run" / "train.log").read_text().count("epoch 1:") == 1
