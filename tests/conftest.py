from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests import tiny_models  # noqa: E402
from tests.paths import REPO, SAMPLE


@pytest.fixture(scope="session", autouse=True)
def verified_stamps_in_a_temporary_directory(tmp_path_factory):
    """Bundles' verified stamps go to a directory of this run, not the user's ~/.cache/routerdb."""
    before = os.environ.get("ROUTERDB_CACHE")
    os.environ["ROUTERDB_CACHE"] = str(tmp_path_factory.mktemp("routerdb-cache"))
    yield
    if before is None:
        os.environ.pop("ROUTERDB_CACHE", None)
    else:
        os.environ["ROUTERDB_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_encoders(tmp_path_factory) -> dict[str, Path]:
    """The tiny encoders, the same in every session: each built under one torch seed, BERT with its
    fixed vocabulary (a trained WordPiece vocabulary can differ between processes). Random weights
    drawn anew each session made the tiny router, and so boundary cases of the SQL recipes' tests
    (a budget met to float precision, tied gaps), differ from one run to the next."""
    import torch

    root = tmp_path_factory.mktemp("encoders")
    out = {}
    for kind in tiny_models.KINDS:
        torch.manual_seed(0)
        out[kind] = tiny_models.build(kind, root / kind, fixed_vocab=kind == "bert")
    return out


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a test module (`pytestmark = pytest.mark.usefixtures(...)`). On a
    shared 2-core machine two OpenMP threads spin waiting for each other: tiny-model training ran
    2-3x slower in wall time and used 3x the CPU time."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_router(tiny_encoders):
    """A LoRA-tuned tiny BERT router trained briefly on synthetic scores (3 LLMs)."""
    from training.router import TransformerEmbeddingModel
    from training.specs import LoRA, ValidationSplit

    model = TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), finetuning=LoRA(),
                                      epochs=2, batch_size=32, progress=False)
    model.train(tiny_models.synthetic_scores(), validation_split=ValidationSplit(0.25, 0))
    return model


@pytest.fixture(scope="session")
def tiny_bundle(tiny_router, tmp_path_factory) -> Path:
    """The tiny router exported to a verified bundle (treat as read-only; copy to modify)."""
    from training.export import export_bundle

    prompts = tiny_models.synthetic_scores()["prompt"].to_pylist()[::3][:20]
    return export_bundle(tiny_router, tmp_path_factory.mktemp("bundles") / "tiny", prompts)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, sample_path) -> Path:
    """The demo spec (packaged all-MiniLM-L6-v2, the sample's 9 LLMs) trained for one epoch on 48
    prompts of the shipped sample: `run/` (checkpoint, train.log) and `bundle/` under the path."""
    from training.fit import main as fit_main

    root = tmp_path_factory.mktemp("demo")
    table = pq.read_table(sample_path)
    keep = sorted(set(table["prompt_id"].to_pylist()))[:48]  # a slice of the shipped sample
    pq.write_table(table.filter(pc.is_in(table["prompt_id"], value_set=pa.array(keep))),
                   root / "sample.parquet")
    spec = json.loads((REPO / "examples" / "specs" / "demo.json").read_text())
    spec["data"]["train"] = [str(root / "sample.parquet")]
    spec["output"] = {"run_dir": str(root / "run"), "bundle_dir": str(root / "bundle")}
    spec.update(epochs=1, progress=False)
    spec["export"] = {"verify_prompts": 8}
    (root / "spec.json").write_text(json.dumps(spec))
    assert fit_main([str(root / "spec.json")]) == 0
    return root
