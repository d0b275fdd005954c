"""Untrusted bundles and encoders: loading never runs code from them (no pickle, no remote code),
every file's sha256 is checked, nothing outside the bundle is read (links included), and a damaged
or hostile model.onnx is refused before ONNX Runtime sees it.

tests/runtime/test_bundle.py covers the basics (one altered byte in model.onnx, a truncated models.parquet,
a `../` path, a newer format); this file adds what an attacker would try next.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routerdb.bundle import Bundle, BundleError
from routerdb.manifest import manifest_text
from routerdb.onnx_file import OnnxFileError, check_self_contained
from routerdb.router import Router
from tests.paths import REPO

SOURCES = sorted([*(REPO / "routerdb").rglob("*.py"), *(REPO / "training").rglob("*.py")])


@pytest.fixture
def bundle(tiny_bundle, tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, target)
    return target


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _save(path: Path, manifest: dict) -> None:
    (path / "manifest.json").write_text(manifest_text(manifest))  # as an export with these fields would


def _rehash(path: Path, name: str) -> None:
    """Make the manifest agree with a replaced file: what a deliberate attacker would do."""
    manifest = _manifest(path)
    manifest["files"][name]["sha256"] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    _save(path, manifest)


class _Exploit:
    """Unpickling this creates `marker`: proof that code from a file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ------------------------------------------------------------------ no code execution


@pytest.mark.parametrize("pattern", [
    r"\bimport pickle\b|\bpickle\.loads?\(|\bcloudpickle\b|\bdill\b|\bjoblib\b",
    r"\btorch\.load\(",
    r"trust_remote_code\s*=\s*True",
    r"allow_pickle\s*=\s*True",
    r"\byaml\.(unsafe_)?load\(",
    r"\b(exec|eval)\(\s*(?!\))",  # builtins exec/eval with an argument (module.eval() has none)
])
def test_no_unsafe_loader_in_the_source(pattern):
    hits = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            for path in SOURCES for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not hits, "unsafe loading in the source:\n" + "\n".join(hits)


def test_every_from_pretrained_refuses_remote_code():
    calls = [(path, line) for path in SOURCES for line in path.read_text().splitlines()
             if "from_pretrained(" in line and not line.lstrip().startswith(("#", '"'))
             and "def " not in line and "`" not in line]
    assert calls
    for path, line in calls:
        assert "trust_remote_code=False" in line, f"{path.name}: {line.strip()}"


def test_loading_and_scoring_a_bundle_never_unpickles(tiny_bundle):
    # pickle's entry points raise in this process: any unpickling while loading or querying fails it.
    code = f"""
import pickle, sys
def refuse(*a, **k): raise AssertionError("pickle was used")
pickle.load = pickle.loads = refuse
pickle.Unpickler = refuse
import duckdb, routerdb
con = duckdb.connect(); routerdb.register(con, {str(tiny_bundle)!r})
rows = con.sql("SELECT route_score('hi', model), route_best('hi') FROM router_models").fetchall()
assert len(rows) == 3 and 'torch' not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_pickled_payload_in_models_parquet_does_not_run(bundle, tmp_path):
    marker = tmp_path / "PWNED"
    evil = pa.field("model", pa.binary(), metadata={
        b"ARROW:extension:name": b"arrow.py_extension_type",  # what old pyarrow unpickled on read
        b"ARROW:extension:metadata": pickle.dumps(_Exploit(marker))})
    table = pa.Table.from_arrays([pa.array([b"a"]), pa.array([[0.1] * 32], pa.list_(pa.float32()))],
                                 schema=pa.schema([evil, pa.field("embedding", pa.list_(pa.float32()))]))
    pq.write_table(table, bundle / "models.parquet")
    _rehash(bundle, "models.parquet")
    with pytest.raises(BundleError, match=r"column types model: binary"):
        Bundle.load(bundle)
    assert not marker.exists()


def _encoder_with(tmp_path, tiny_encoders, extra: dict[str, bytes], drop=()) -> Path:
    target = tmp_path / "encoder"
    shutil.copytree(tiny_encoders["bert"], target)
    for name in drop:
        (target / name).unlink()
    for name, data in extra.items():
        (target / name).write_bytes(data)
    return target


def test_encoder_with_remote_code_is_not_run(tmp_path, tiny_encoders):
    from training.encoder.pretrained import EncoderRef, load_base_model, load_config

    marker = tmp_path / "PWNED"
    encoder = _encoder_with(tmp_path, tiny_encoders, {
        "evil.py": f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n".encode()})
    config = json.loads((encoder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (encoder / "config.json").write_text(json.dumps(config))
    ref = EncoderRef("evil", str(encoder), "local")
    for load in (load_config, load_base_model):
        try:
            load(ref)
        except (ValueError, OSError):
            pass  # refusing is fine; running evil.py is not
    assert not marker.exists()


def test_encoder_with_pickled_weights_only_is_refused(tmp_path, tiny_encoders):
    from training.encoder.pretrained import EncoderRef, load_base_model

    marker = tmp_path / "PWNED"
    encoder = _encoder_with(tmp_path, tiny_encoders, {"pytorch_model.bin": pickle.dumps(_Exploit(marker))},
                            drop=["model.safetensors"])
    with pytest.raises(OSError, match="safetensors"):
        load_base_model(EncoderRef("pickled", str(encoder), "local"))
    assert not marker.exists()


# ------------------------------------------------------------------ checksums


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "models.parquet"])
def test_every_file_is_checked_against_its_sha256(bundle, name):
    path = bundle / _manifest(bundle)["files"][name]["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"'{re.escape(name)}' has sha256 .* altered or damaged"):
        Bundle.load(bundle)


def test_an_extra_file_in_the_manifest_is_checked_too(bundle):
    (bundle / "notes.txt").write_text("changed after export")
    manifest = _manifest(bundle)
    manifest["files"]["notes.txt"] = {"path": "notes.txt", "sha256": "0" * 64}
    _save(bundle, manifest)
    with pytest.raises(BundleError, match=r"'notes.txt' has sha256"):
        Bundle.load(bundle)


# ------------------------------------------------------------------ nothing outside the bundle


def test_absolute_path_is_refused(bundle, tmp_path):
    shutil.copy(bundle / "model.onnx", tmp_path / "elsewhere.onnx")
    manifest = _manifest(bundle)
    manifest["files"]["model.onnx"]["path"] = str(tmp_path / "elsewhere.onnx")
    _save(bundle, manifest)
    with pytest.raises(BundleError, match="points outside the bundle"):
        Bundle.load(bundle)


def test_file_symlink_to_outside_is_refused(bundle, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.move(bundle / "model.onnx", outside)  # same bytes, same sha256: only the link is wrong
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match=r"'model.onnx' points outside the bundle"):
        Bundle.load(bundle)


def test_directory_symlink_to_outside_is_refused(bundle, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    shutil.move(bundle / "tokenizer.json", tmp_path / "elsewhere" / "tokenizer.json")
    (bundle / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    manifest = _manifest(bundle)
    manifest["files"]["tokenizer.json"]["path"] = "sub/tokenizer.json"
    _save(bundle, manifest)
    with pytest.raises(BundleError, match=r"'tokenizer.json' points outside the bundle"):
        Bundle.load(bundle)


def test_manifest_symlink_to_outside_is_refused(bundle, tmp_path):
    shutil.move(bundle / "manifest.json", tmp_path / "manifest.json")
    (bundle / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(BundleError, match="manifest.json is a link to a file outside the bundle"):
        Bundle.load(bundle)


def test_links_inside_the_bundle_and_a_linked_bundle_are_fine(bundle, tmp_path):
    (bundle / "model.onnx").rename(bundle / "graph.onnx")
    (bundle / "model.onnx").symlink_to("graph.onnx")  # relative link, stays inside
    (tmp_path / "link").symlink_to(bundle, target_is_directory=True)
    assert Router(tmp_path / "link").score(["hi"]).shape == (1, 3)


# ------------------------------------------------------------------ model.onnx before ONNX Runtime


@pytest.fixture
def onnx_runtime_calls(monkeypatch) -> list:
    import onnxruntime

    calls: list = []
    real = onnxruntime.InferenceSession

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    return calls


def test_tampered_onnx_never_reaches_onnx_runtime(bundle, onnx_runtime_calls):
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) - 100])  # truncated
    with pytest.raises(BundleError, match="'model.onnx' has sha256"):
        Router(bundle)
    assert onnx_runtime_calls == []


@pytest.mark.parametrize("cut", [0.001, 0.1, 0.5, 0.9, 0.999])
def test_truncated_onnx_with_a_matching_checksum_never_reaches_onnx_runtime(bundle, cut, onnx_runtime_calls):
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: int(len(data) * cut)])
    _rehash(bundle, "model.onnx")  # an attacker (or a broken copier) fixed the manifest too
    with pytest.raises(BundleError, match=r"'model.onnx': .*(truncated|malformed|not an ONNX model)"):
        Router(bundle)
    assert onnx_runtime_calls == []


def _onnx_with_external_data(path: Path, location: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros(4, np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "16"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("location", ["/etc/hostname", "../../secret.bin", "inside.bin"])
def test_onnx_with_external_data_is_refused(bundle, location, onnx_runtime_calls):
    _onnx_with_external_data(bundle / "model.onnx", location)
    _rehash(bundle, "model.onnx")
    with pytest.raises(BundleError, match="keeps tensor data in external files"):
        Router(bundle)
    assert onnx_runtime_calls == []


def test_external_data_inside_a_subgraph_is_found(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    _onnx_with_external_data(tmp_path / "inner.onnx", "x.bin")
    inner = onnx.load(str(tmp_path / "inner.onnx"), load_external_data=False).graph
    branch = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)
    outer = helper.make_graph([branch], "outer", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(outer, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxFileError, match="external files"):
        check_self_contained(model.SerializeToString())


def test_the_exported_graph_passes_the_check(tiny_bundle):
    check_self_contained((tiny_bundle / "model.onnx").read_bytes())
    for data in (b"", b"\x08", b"\xff" * 64, os.urandom(4096)):
        with pytest.raises(OnnxFileError):
            check_self_contained(data)
