from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from routerdb.bundle import FORMAT_VERSION, Bundle, BundleError, models_table, write_bundle
from routerdb.manifest import manifest_text


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, target)
    return target


def _edit_manifest(path, fn):
    manifest = json.loads((path / "manifest.json").read_text())
    fn(manifest)
    (path / "manifest.json").write_text(manifest_text(manifest))  # as an export with these fields would


def test_manifest_describes_itself(tiny_bundle):
    b = Bundle.load(tiny_bundle)
    m = b.manifest
    assert m["format"] == "routerdb-bundle" and m["format_version"] == FORMAT_VERSION
    assert {"torch", "transformers", "onnx", "tokenizers"} <= set(m["library_versions"])
    assert set(m["files"]) == {"model.onnx", "tokenizer.json", "models.parquet", "head.safetensors"}
    assert m["graph"]["outputs"] == ["scores", "prompt_vectors"] and m["head"]["llm_dim"] == 32
    assert all(len(f["sha256"]) == 64 for f in m["files"].values())
    assert m["pooling"] in ("mean", "cls", "last_token") and m["max_length"] == 128
    assert len(m["feature_names"]) == len(m["feature_stats"]["mean"]) > 30
    assert m["spec"]["finetuning"]["kind"] == "lora"
    assert m["verification"]["max_abs_diff"] <= 1e-4
    assert b.model_names == ("chat", "coder", "weak") and b.model_embeddings.shape == (3, 32)


def test_tampered_file_is_refused(bundle_copy):
    with open(bundle_copy / "model.onnx", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match=r"'model.onnx' has sha256 .* altered or damaged"):
        Bundle.load(bundle_copy)


def test_truncated_file_is_refused(bundle_copy):
    data = (bundle_copy / "models.parquet").read_bytes()
    (bundle_copy / "models.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="models.parquet"):
        Bundle.load(bundle_copy)


def test_newer_format_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleError, match=r"format version 2, this routerdb reads versions 1 to 1. Upgrade"):
        Bundle.load(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="'tokenizer.json' is missing"):
        Bundle.load(bundle_copy)


def test_path_outside_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "evil.onnx"
    shutil.copy(bundle_copy / "model.onnx", outside)
    _edit_manifest(bundle_copy, lambda m: m["files"]["model.onnx"].update(path="../evil.onnx"))
    with pytest.raises(BundleError, match="points outside the bundle"):
        Bundle.load(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        Bundle.load(tmp_path / "nothing")
    with pytest.raises(BundleError, match="has no manifest.json"):
        Bundle.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(BundleError, match="expected 'routerdb-bundle'"):
        Bundle.load(tmp_path)


def _write_small(target, fail: bool = False):
    def files(tmp):
        import pyarrow.parquet as pq

        (tmp / "a.txt").write_text("new")
        pq.write_table(models_table(["m"], np.zeros((1, 2))), tmp / "models.parquet")
        return {"a": "a.txt", "models.parquet": "models.parquet"}

    def verify(tmp):
        if fail:
            raise RuntimeError("verification failed")
        return {"verification": {"ok": True}}

    return write_bundle(target, {"note": "x"}, files, verify=verify)


def test_write_is_atomic_and_failed_verify_keeps_previous(tmp_path):
    target = tmp_path / "b"
    _write_small(target)
    before = (target / "manifest.json").read_text()
    assert json.loads(before)["verification"] == {"ok": True}
    with pytest.raises(RuntimeError, match="verification failed"):
        _write_small(target, fail=True)
    assert (target / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary directories left


def test_models_table_rejects_duplicates():
    with pytest.raises(BundleError, match="unique"):
        models_table(["a", "a"], np.zeros((2, 3)))


def test_files_are_checked_once_per_process_until_they_change(bundle_copy, monkeypatch):
    import routerdb.bundle as rb

    calls = []
    real, walk = rb.sha256_file, rb.check_self_contained
    monkeypatch.setattr(rb, "sha256_file", lambda path: calls.append(path.name) or real(path))
    monkeypatch.setattr(rb, "check_self_contained", lambda data: calls.append("model.onnx") or walk(data))
    first = Bundle.load(bundle_copy)
    assert sorted(calls) == ["head.safetensors", "model.onnx", "models.parquet", "tokenizer.json"]
    calls.clear()
    again = Bundle.load(bundle_copy)
    assert calls == [] and again.digest == first.digest  # unchanged: not hashed again
    data = (bundle_copy / "models.parquet").read_bytes()
    (bundle_copy / "models.parquet").write_bytes(data)  # rewritten (same bytes, new times): checked again
    Bundle.load(bundle_copy)
    assert len(calls) == len(first.manifest["files"])  # every file checked again
    (bundle_copy / "tokenizer.json").write_text("{}")  # changed after a check: refused, not served stale
    with pytest.raises(BundleError, match="'tokenizer.json' has sha256"):
        Bundle.load(bundle_copy)


def test_written_manifest_carries_its_checksum(tmp_path):
    from routerdb.manifest import manifest_checksum

    target = _write_small(tmp_path / "b")
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["manifest_sha256"] == manifest_checksum(manifest)


def test_bundle_directory_follows_the_umask(tmp_path):
    import os
    import stat

    before = os.umask(0o022)
    try:
        target = _write_small(tmp_path / "b")
    finally:
        os.umask(before)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # mkdtemp made it 0700 whatever the umask
    assert stat.S_IMODE((target / "manifest.json").stat().st_mode) == 0o644


def test_every_bundle_file_follows_the_umask(tmp_path):
    import os
    import stat
    import tempfile

    from safetensors.numpy import save_file

    def files(tmp):
        import pyarrow.parquet as pq

        save_file({"w": np.zeros(2, np.float32)}, str(tmp / "head.safetensors"))  # 0600 whatever the umask
        os.close(tempfile.mkstemp(dir=tmp, prefix="made-by-mkstemp")[0])
        (tmp / "sub").mkdir()
        pq.write_table(models_table(["m"], np.zeros((1, 2))), tmp / "models.parquet")
        return {"head": "head.safetensors", "models.parquet": "models.parquet"}

    before = os.umask(0o027)
    try:
        target = write_bundle(tmp_path / "b", {"note": "x"}, files)
    finally:
        os.umask(before)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in target.iterdir()}
    assert modes.pop("sub") == 0o750
    assert set(modes.values()) == {0o640}, modes


def _best_as_another_user(bundle) -> str:
    """The best LLM for a prompt, scored by a user who reads `bundle` through its group/other bits."""
    import os

    import routerdb

    if os.geteuid() != 0:  # give the owner exactly what others get: the owner's own bits no longer help
        for path in [bundle, *bundle.rglob("*")]:
            os.chmod(path, (path.stat().st_mode & 0o7) * 0o111)
        return routerdb.Router(bundle).best(["What is 2 + 2?"])[0]
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(65534)
    os.seteuid(65534)  # root reads everything: read it as `nobody`
    try:
        return routerdb.Router(bundle).best(["What is 2 + 2?"])[0]
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def test_an_exported_bundle_loads_for_another_user(tiny_router):
    import os
    import stat
    import tempfile

    from tests import tiny_models
    from training.export import export_bundle

    root = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's tmp_path sits in a folder only its user may enter
    try:
        os.chmod(root, 0o755)
        prompts = tiny_models.synthetic_scores()["prompt"].to_pylist()[:4]
        before = os.umask(0o022)
        try:
            bundle = export_bundle(tiny_router, root / "bundle", prompts)
        finally:
            os.umask(before)
        assert stat.S_IMODE((bundle / "head.safetensors").stat().st_mode) == 0o644  # was 0600
        assert _best_as_another_user(bundle) in ("chat", "coder", "weak")
        os.chmod(bundle / "head.safetensors", 0o600)  # as routerdb wrote it before: a one-line reason
        with pytest.raises(BundleError, match=r"head.safetensors.*denied \(mode 600\).*chmod -R a\+rX"):
            _best_as_another_user(bundle)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_verified_bundle_is_not_hashed_again_by_a_later_process(bundle_copy, monkeypatch):
    import routerdb.bundle as rb

    calls = []
    real = rb.sha256_file
    monkeypatch.setattr(rb, "sha256_file", lambda path: calls.append(path.name) or real(path))
    monkeypatch.setattr(rb, "check_self_contained", lambda data: calls.append("model.onnx"))
    first = Bundle.load(bundle_copy)
    assert len(calls) == 4
    monkeypatch.setattr(rb, "_VERIFIED", rb._VerifiedBundles(4))  # a new process: nothing remembered
    calls.clear()
    again = Bundle.load(bundle_copy)
    assert calls == [] and again.digest == first.digest  # the stamp of the first check (was: 4 files hashed)
    assert again.model_names == first.model_names


def test_a_file_altered_after_its_stamp_is_still_refused(bundle_copy, monkeypatch):
    import routerdb.bundle as rb

    Bundle.load(bundle_copy)  # verified: stamped
    monkeypatch.setattr(rb, "_VERIFIED", rb._VerifiedBundles(4))
    path = bundle_copy / "models.parquet"
    stat_before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))  # mtime set back; ctime moved
    with pytest.raises(BundleError, match="'models.parquet' has sha256"):
        Bundle.load(bundle_copy)


def test_a_cache_directory_that_cannot_be_written_costs_only_the_stamp(bundle_copy, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("ROUTERDB_CACHE", str(tmp_path / "file"))  # below a file: no stamp can be written
    assert Bundle.load(bundle_copy).model_names == ("chat", "coder", "weak")


def test_loading_a_bundle_imports_neither_pandas_nor_pyarrow_dataset(tiny_bundle):
    import subprocess
    import sys

    code = ("import sys, routerdb; r = routerdb.Router(sys.argv[1]); r.score(['hi']); "
            "print(sorted(m for m in ('pandas', 'pyarrow.dataset') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"  # they cost 0.3-0.9 s of a one-shot `routerdb score`
