"""No behaviour change across refactors: the shipped specs, trained on a tiny encoder with their
seed, export bundles whose scores equal the recorded ones to 1e-6.

`golden_scores.json` was written by the code *before* the restructuring of `training/` into
subpackages (issue 11), with its prompt-vector cache already filled. (That code re-seeded torch's
random-number generator when it filled the cache, so the frozen-encoder spec trained to other
weights on a cold cache than on a warm one; the restructured code gives the warm-cache result
whatever the cache holds.) Regenerate with

    python -m tests.training.test_golden --write

A modelling change that alters what a spec trains must regenerate it in the same commit, and say
so in the commit message; a refactor never does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests import tiny_models
from tests.paths import REPO, SAMPLE

GOLDEN = Path(__file__).with_name("golden_scores.json")
SPECS = ("demo", "router", "llm_embeddings")  # examples/specs/<name>.json
N_PROMPTS = 80  # of the shipped sample: enough pairs for every LLM, seconds per run
TRAINING = {"epochs": 2, "embedding_model_epochs": 2, "progress": False}


def _spec(name: str, encoder: Path, data: Path, out: Path):
    from training.specs import parse_spec

    raw = json.loads((REPO / "examples" / "specs" / f"{name}.json").read_text())
    raw.update(TRAINING)
    raw["data"] = {**raw["data"], "train": [str(data)], "aliases": None}
    raw["encoder"] = {**raw["encoder"], "name": str(encoder)}
    raw["output"] = {"run_dir": str(out / "run"), "bundle_dir": str(out / "bundle")}
    if raw.get("min_model_comparisons"):
        raw["min_model_comparisons"] = 10
    return parse_spec(raw)


def _sample(path: Path) -> Path:
    table = pq.read_table(SAMPLE)
    ids = sorted(set(table["prompt_id"].to_pylist()))[:N_PROMPTS]
    rows = [i for i, p in enumerate(table["prompt_id"].to_pylist()) if p in set(ids)]
    pq.write_table(table.take(rows), path)
    return path


def scores(root: Path) -> dict:
    """{spec name: {"llms": [...], "scores": [[...]]}} for every shipped spec, trained under `root`."""
    import torch

    from routerdb import Router
    from training.fit import fit

    torch.manual_seed(0)  # the tiny encoder's random weights
    encoder = tiny_models.build("bert", root / "encoder", fixed_vocab=True)
    data = _sample(root / "sample.parquet")
    prompts = sorted(set(pq.read_table(data)["prompt"].to_pylist()))[:24]
    out = {}
    for name in SPECS:
        torch.set_num_threads(1)
        bundle = fit(_spec(name, encoder, data, root / name))
        router = Router(bundle, providers=["CPUExecutionProvider"], cache_size=0)
        out[name] = {"llms": list(router.models), "scores": router.score(prompts).tolist()}
    return out


@pytest.mark.usefixtures("one_torch_thread")
def test_shipped_specs_score_as_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the frozen-encoder spec's prompt cache (build/cache/) goes here, cold
    golden = json.loads(GOLDEN.read_text())
    got = scores(tmp_path)
    assert sorted(got) == sorted(golden)
    for name, want in golden.items():
        assert got[name]["llms"] == want["llms"], name
        np.testing.assert_allclose(got[name]["scores"], want["scores"], rtol=0, atol=1e-6, err_msg=name)


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.training.test_golden --write")
    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(json.dumps(scores(Path(tmp))))
    print(f"wrote {GOLDEN}")
