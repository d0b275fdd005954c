"""The demo path with the real packaged all-MiniLM-L6-v2: spec -> fit -> bundle -> DuckDB SQL."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import routerdb
from tests.paths import REPO
from training.fit import main as fit_main
from training.router import TransformerEmbeddingModel


def test_demo_spec_end_to_end_with_packaged_minilm(tmp_path, sample_path):
    table = pq.read_table(sample_path)
    keep = sorted(set(table["prompt_id"].to_pylist()))[:48]  # a slice of the shipped sample
    pq.write_table(table.filter(pc.is_in(table["prompt_id"], value_set=pa.array(keep))),
                   tmp_path / "sample.parquet")
    spec = json.loads((REPO / "examples" / "specs" / "demo.json").read_text())
    spec["data"]["train"] = [str(tmp_path / "sample.parquet")]
    spec["output"] = {"run_dir": str(tmp_path / "run"), "bundle_dir": str(tmp_path / "bundle")}
    spec.update(epochs=1, progress=False)
    spec["export"] = {"verify_prompts": 8}
    (tmp_path / "spec.json").write_text(json.dumps(spec))

    assert fit_main([str(tmp_path / "spec.json")]) == 0

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
