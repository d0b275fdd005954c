"""The runtime installed alone: `pip install .` (no extras) into a fresh venv has no torch, and scores
through Router, register and `routerdb rescore` exactly as the full environment does. (The README's
dependency list is checked against pyproject by tests/test_dependencies.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routerdb.rescore import rescore
from routerdb.router import shared_router
from tests.paths import REPO

PROMPTS = ["Write a Python function that merges two lists.", "Name the largest planet.", "Solve 4x - 3 = 9."]
SOURCES = ("pyproject.toml", "README.md", "routerdb", "training", "sql", "constraints.txt")  # what it reads

# Run by the fresh venv's Python: scores through Router and register, printed as JSON.
SCORE = """
import json, sys
import duckdb, routerdb
bundle, prompts = sys.argv[1], json.loads(sys.argv[2])
router = routerdb.Router(bundle)
con = duckdb.connect()
routerdb.register(con, bundle)
con.execute("CREATE TABLE p AS SELECT unnest(?) AS prompt", [prompts])
sql = con.execute("SELECT prompt, model, route_score(prompt, model) FROM p CROSS JOIN router_models")
sql = sql.fetchall()
print(json.dumps({"models": list(router.models), "scores": router.score(prompts).tolist(), "sql": sql,
                  "torch": "torch" in sys.modules, "file": routerdb.__file__}))
"""


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh venv with `pip install .` of a copy of the checkout (pip's cache and local wheels), at the
    versions of constraints.txt, as make install takes them."""
    root = tmp_path_factory.mktemp("runtime-install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:  # a copy: the build leaves nothing in the checkout (links become files)
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (REPO / name).is_dir() else {}))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "-c", str(source / "constraints.txt"), str(source)]
    done = subprocess.run(pip, env=clean_env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv


def clean_env() -> dict[str, str]:
    """This environment without what would let the venv see this checkout or this venv's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def in_venv(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], env=clean_env(), capture_output=True,
                          text=True, timeout=300, cwd=venv)


def test_runtime_alone_has_no_torch_and_scores_like_the_full_install(runtime_venv, tiny_bundle, tmp_path):
    listed = in_venv(runtime_venv, "pip", "list", "--format=json")
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "routerdb" in installed and not installed & {"torch", "transformers", "matplotlib", "pyspark"}
    done = in_venv(runtime_venv, "python", "-c", SCORE, str(tiny_bundle), json.dumps(PROMPTS))
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    assert not got["torch"] and got["file"].startswith(str(runtime_venv))  # the installed copy, not ours
    router = shared_router(tiny_bundle)
    assert got["models"] == list(router.models)
    want = router.score(PROMPTS)
    np.testing.assert_allclose(got["scores"], want, atol=1e-6)
    sql = {(p, m): s for p, m, s in got["sql"]}
    np.testing.assert_allclose([[sql[p, m] for m in router.models] for p in PROMPTS], want, atol=1e-6)


def test_runtime_alone_rescores_and_says_what_report_needs(runtime_venv, tiny_bundle, tmp_path):
    log = tmp_path / "log.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "prompt": [*PROMPTS, None]}), log)
    out = tmp_path / "out.parquet"
    done = in_venv(runtime_venv, "routerdb", "rescore", str(tiny_bundle), str(log), str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    got = pq.read_table(out).to_pylist()
    want = pq.read_table(rescore(tiny_bundle, log, tmp_path / "here.parquet", progress=False)).to_pylist()
    assert [(r["id"], r["prompt"], r["route_best"]) for r in got] == \
        [(r["id"], r["prompt"], r["route_best"]) for r in want]
    for g, w in zip(got, want, strict=True):
        if w["route_scores"] is None:
            assert g["route_scores"] is None
            continue
        np.testing.assert_allclose([v for _, v in g["route_scores"]], [v for _, v in w["route_scores"]],
                                   atol=1e-6)
    done = in_venv(runtime_venv, "routerdb", "report", str(tiny_bundle), str(log), "--out",
                   str(tmp_path / "r.html"))
    assert done.returncode == 2 and 'pip install "routerdb[report]"' in done.stderr, done.stderr[-2000:]
    assert (runtime_venv / "bin" / "routerdb").is_file()
