"""The on-disk router bundle: the only reader and writer of its files.

A bundle is a directory::

    manifest.json    format, versions, the spec that made it, pooling, max length, feature
                     names and statistics, and the sha256 of every other file
    model.onnx       (input_ids, attention_mask, features, model_embeddings) -> scores [P, M]
    tokenizer.json   the encoder's tokenizer (Hugging Face `tokenizers` format)
    models.parquet   the LLM table: model (name), embedding (list<float32>)

Loading checks the format version, that every file named by the manifest lies inside the bundle,
and every file's sha256 before anything reads it. Nothing is unpickled and no code is executed.
Writing goes to a temporary directory beside the target, which is renamed into place only when
complete, so a reader never sees half a bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

FORMAT = "routerdb-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.onnx", "tokenizer.json", "models.parquet")


class BundleError(ValueError):
    """A bundle that cannot be used: missing, damaged, of another format, or unsafe."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk. Build with `Bundle.load(path)`."""

    path: Path
    manifest: dict[str, Any]
    model_names: tuple[str, ...]
    model_embeddings: np.ndarray  # [M, D] float32
    digest: str = field(repr=False)  # sha256 of the manifest: identifies this exact bundle

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest["files"]["model.onnx"]["path"]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest["files"]["tokenizer.json"]["path"]

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def pooling(self) -> str:
        return str(self.manifest["pooling"])

    @classmethod
    def load(cls, path: str | os.PathLike[str] | Bundle) -> Bundle:
        if isinstance(path, Bundle):
            return path
        root = Path(path)
        if not root.is_dir():
            raise BundleError(
                f"no bundle at {str(root)!r}: it is not a directory. A bundle is the directory "
                "written by `python -m training.fit` (its `output.bundle_dir`); pass that path."
            )
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(
                f"{str(root)!r} has no {MANIFEST}: it is not a routerdb bundle or it is incomplete. "
                "Re-export it with `python -m training.fit SPEC`."
            )
        raw = manifest_path.read_bytes()
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{manifest_path} is not valid JSON ({exc}); re-export the bundle.") from exc
        _check_format(manifest, manifest_path)
        root_resolved = root.resolve()
        for name in REQUIRED_FILES:
            if name not in manifest["files"]:
                raise BundleError(
                    f"{manifest_path} lists no {name!r}; a bundle needs {list(REQUIRED_FILES)}. "
                    "Re-export the bundle."
                )
        for name, entry in manifest["files"].items():
            _verify_file(root_resolved, name, entry)
        names, embeddings = _read_models(root / manifest["files"]["models.parquet"]["path"])
        digest = hashlib.sha256(raw).hexdigest()
        return cls(root, manifest, names, embeddings, digest)


def _check_format(manifest: Any, where: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{where}: format is {got!r}, expected {FORMAT!r}; not a routerdb bundle.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise BundleError(
            f"{where}: bundle format version {version!r}, this routerdb reads versions 1 to "
            f"{FORMAT_VERSION}. Upgrade routerdb (`pip install -U routerdb`) to read a newer bundle."
        )
    if not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{where}: 'files' must be a mapping of file name to path and sha256.")


def _verify_file(root: Path, name: str, entry: Any) -> None:
    if not isinstance(entry, dict) or not {"path", "sha256"} <= entry.keys():
        raise BundleError(f"manifest entry for {name!r} must have 'path' and 'sha256', got {entry!r}")
    target = (root / str(entry["path"])).resolve()
    if not target.is_relative_to(root):
        raise BundleError(
            f"manifest entry {name!r} points outside the bundle ({entry['path']!r}); refusing to "
            "read it. Bundles may only name files inside their own directory."
        )
    if not target.is_file():
        raise BundleError(
            f"bundle file {entry['path']!r} is missing from {str(root)!r}; the bundle is incomplete. "
            "Copy the whole bundle directory, or re-export it."
        )
    actual = sha256_file(target)
    if actual != entry["sha256"]:
        raise BundleError(
            f"bundle file {entry['path']!r} has sha256 {actual[:12]}..., the manifest says "
            f"{str(entry['sha256'])[:12]}...: the file was altered or damaged. Re-export or re-copy "
            "the bundle."
        )


def _read_models(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    table = pq.read_table(path)
    names = tuple(table.column("model").to_pylist())
    emb = table.column("embedding").combine_chunks()
    dim = len(emb[0]) if len(emb) else 0
    matrix = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return names, matrix.reshape(len(names), dim)


def models_table(names: list[str] | tuple[str, ...], embeddings: np.ndarray) -> pa.Table:
    """The LLM table as written to `models.parquet`."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(set(names)) != len(names):
        raise BundleError(f"LLM names must be unique, got duplicates in {list(names)}")
    if embeddings.shape[0] != len(names):
        raise BundleError(f"{len(names)} LLM names but {embeddings.shape[0]} embeddings")
    dim = embeddings.shape[1]
    values = pa.array(embeddings.reshape(-1), type=pa.float32())
    column = pa.FixedSizeListArray.from_arrays(values, dim).cast(pa.list_(pa.float32()))
    return pa.table({"model": pa.array(list(names), pa.string()), "embedding": column})


def write_bundle(
    target: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    write_files: Callable[[Path], Mapping[str, str]],
    verify: Callable[[Path], Mapping[str, Any] | None] | None = None,
) -> Path:
    """Write a bundle atomically.

    `write_files(tmpdir)` writes the bundle's files into `tmpdir` and returns {logical name:
    relative path}. The manifest gets the format header and a sha256 per file, then the
    directory is renamed onto `target`; an existing bundle there is replaced only then.
    `verify(tmpdir)`, if given, checks the complete bundle before the rename and raises to stop it;
    a mapping it returns is added to the manifest (e.g. the measured export error).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        files = write_files(tmp)
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
        full["files"] = {
            name: {"path": rel, "sha256": sha256_file(tmp / rel), "bytes": (tmp / rel).stat().st_size}
            for name, rel in files.items()
        }
        _write_manifest(tmp, full)
        if verify is not None:
            _write_manifest(tmp, {**full, **(verify(tmp) or {})})
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote bundle %s", target)
    return target


def _write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / "bundle")
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old / "bundle", target)  # put the previous bundle back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
