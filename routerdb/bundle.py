"""The on-disk router bundle: the only reader and writer of its files.

A bundle is a directory::

    manifest.json    format, versions, the spec that made it, pooling, max length, feature
                     names and statistics, and the sha256 of every other file
    model.onnx       (input_ids, attention_mask, features, model_embeddings) -> scores [P, M]
    tokenizer.json   the encoder's tokenizer (Hugging Face `tokenizers` format)
    models.parquet   the LLM table: model (name), embedding (list<float32>)

Loading checks the format version, that every file named by the manifest lies inside the bundle,
and every file's sha256 before anything reads it. Nothing is unpickled and no code is executed.
Writing goes to a temporary directory beside the target, which is swapped into place only when
complete (`routerdb.atomic`: one renameat2 exchange on Linux), so a reader never sees half a bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from routerdb import atomic
from routerdb.manifest import (
    FORMAT,
    FORMAT_VERSION,
    ManifestError,
    check_llm_table,
    check_manifest,
    manifest_text,
)
from routerdb.onnx_file import OnnxFileError, check_self_contained

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few kB
VERIFIED_BUNDLES = 64  # bundle directories whose last check is remembered


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
        """Read and verify the bundle at `path` (a Bundle is returned as it is).

        Every file's sha256 is checked once per bundle version: an unchanged bundle (same manifest
        bytes, same size, inode and times of its files) is served from the last check, of this
        process or, through a verified stamp in the user's cache directory, of an earlier one.
        """
        if isinstance(path, Bundle):
            return path
        root = _bundle_dir(path)
        manifest_path, raw = _read_manifest(root)
        root_resolved = root.resolve()
        cached = _VERIFIED.get(root_resolved, raw)
        if cached is not None:
            return replace(cached, path=root)
        try:
            manifest = json.loads(raw)
            check_manifest(manifest)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise BundleError(f"{manifest_path} is not valid JSON ({exc}); re-export the bundle.") from None
        except ManifestError as exc:
            raise BundleError(f"{manifest_path}: {exc}") from None
        targets = [_resolve_file(root_resolved, name, entry) for name, entry in manifest["files"].items()]
        before = _file_states(targets)
        digest = hashlib.sha256(raw).hexdigest()
        if before is not None and verified_stamp(root_resolved) == _stamp_text(raw, before):
            bundle = cls(root, manifest, *_read_models_checked(root, manifest), digest)
            _VERIFIED.put(root_resolved, raw, targets, before, bundle)  # checked by an earlier process
            return bundle
        for target, (name, entry) in zip(targets, manifest["files"].items(), strict=True):
            try:
                _check_file(target, name, entry)
            except PermissionError:
                raise BundleError(
                    f"cannot read bundle file {str(target)!r}: permission denied (mode "
                    f"{target.stat().st_mode & 0o777:o}); a bundle is read by every user who serves it. "
                    f"Ask its owner to run `chmod -R a+rX {str(root)!r}`, or copy the bundle."
                ) from None
        bundle = cls(root, manifest, *_read_models_checked(root, manifest), digest)
        if _file_states(targets) == before:  # unchanged while it was checked: safe to remember
            _VERIFIED.put(root_resolved, raw, targets, before, bundle)
            write_verified_stamp(root_resolved, raw, before)
        return bundle


def _bundle_dir(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Bundle.load got {type(path).__name__} {path!r:.80}; allowed: the path of a bundle "
                        "directory (str or os.PathLike) or a Bundle. Pass the directory training wrote "
                        "(its output.bundle_dir).")
    root = Path(path)
    if not root.is_dir():
        raise BundleError(
            f"no bundle at {str(root)!r}: it is not a directory. A bundle is the directory "
            "written by `python -m training.fit` (its `output.bundle_dir`); pass that path."
        )
    return root


def _read_manifest(root: Path) -> tuple[Path, bytes]:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(
            f"{str(root)!r} has no {MANIFEST}: it is not a routerdb bundle or it is incomplete. "
            "Re-export it with `python -m training.fit SPEC`."
        )
    if not manifest_path.resolve().is_relative_to(root.resolve()):
        raise BundleError(
            f"{manifest_path} is a link to a file outside the bundle; refusing to read it. "
            "Copy the bundle with its real files (e.g. `cp -rL`), or re-export it."
        )
    raw = manifest_path.read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is {len(raw)} bytes, more than the {MAX_MANIFEST_BYTES} a "
                          "manifest may have; it is not a routerdb manifest. Re-export the bundle.")
    return manifest_path, raw


def _read_models_checked(root: Path, manifest: dict) -> tuple[tuple[str, ...], np.ndarray]:
    """The LLM table, checked against what the manifest says of it."""
    names, embeddings = _read_models(root / manifest["files"]["models.parquet"]["path"])
    try:
        check_llm_table(manifest, len(names), embeddings.shape[1])
    except ManifestError as exc:
        raise BundleError(f"{root / MANIFEST}: {exc}") from None
    return names, embeddings


def _file_states(targets: list[Path]) -> tuple | None:
    """What changes when a file is rewritten, replaced or touched (None if one is gone)."""
    try:
        stats = [os.stat(t) for t in targets]
    except OSError:
        return None
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in stats)


class _VerifiedBundles:
    """The bundles checked in this process, by resolved directory (the last few directories)."""

    def __init__(self, size: int):
        self._entries: OrderedDict[Path, tuple[bytes, list[Path], tuple, Bundle]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, root: Path, raw: bytes) -> Bundle | None:
        with self._lock:
            entry = self._entries.get(root)
        if entry is None or entry[0] != raw or _file_states(entry[1]) != entry[2]:
            return None
        return entry[3]

    def put(self, root: Path, raw: bytes, targets: list[Path], states: tuple, bundle: Bundle) -> None:
        with self._lock:
            self._entries[root] = (raw, targets, states, bundle)
            self._entries.move_to_end(root)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


_VERIFIED = _VerifiedBundles(VERIFIED_BUNDLES)


# --- verified stamps: a bundle's files are hashed once per version, not once per process -----------
#
# After every file of a bundle matched its sha256, a stamp records the manifest's sha256 and each
# file's (device, inode, size, mtime, ctime). A later process whose bundle shows the same manifest
# and the same file states skips the hashing (0.55 s of a one-shot `routerdb score` on an 87 MB
# bundle). Rewriting, replacing or touching a file changes its ctime, which no user can set back,
# so an altered file is hashed again and refused. Stamps live in the user's cache directory
# (`ROUTERDB_CACHE`, else $XDG_CACHE_HOME/routerdb or ~/.cache/routerdb): a bundle may be read-only.

CACHE_VARIABLE = "ROUTERDB_CACHE"


def stamp_dir() -> Path:
    """Where this user's verified stamps are kept."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured) / "verified"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "routerdb" / "verified"


def _stamp_path(root: Path) -> Path:
    return stamp_dir() / hashlib.sha256(os.fsencode(root)).hexdigest()[:32]


def _stamp_text(raw: bytes, states: tuple) -> str:
    return json.dumps({"manifest_sha256": hashlib.sha256(raw).hexdigest(), "files": states})


def verified_stamp(root: Path) -> str | None:
    """The stamp an earlier check of the bundle at `root` left, or None."""
    try:
        return _stamp_path(root).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write_verified_stamp(root: Path, raw: bytes, states: tuple) -> None:
    """Record that the bundle at `root` matched its checksums (best effort: no stamp, no harm)."""
    path = _stamp_path(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.atomic_write_text(path, _stamp_text(raw, states))
    except OSError as exc:
        log.debug("no verified stamp for %s: %s", root, exc)


def _resolve_file(root: Path, name: str, entry: Any) -> Path:
    """The file a manifest entry names, refused if it lies outside the bundle or is missing."""
    if not isinstance(entry, dict) or not {"path", "sha256"} <= entry.keys():
        raise BundleError(f"manifest entry for {name!r} must have 'path' and 'sha256', got {entry!r:.200}")
    if not isinstance(entry["path"], str) or not entry["path"] or "\0" in entry["path"]:
        raise BundleError(f"manifest entry {name!r} has path {entry['path']!r:.80}; allowed: the non-empty "
                          "relative path of a file inside the bundle. Re-export the bundle.")
    target = (root / entry["path"]).resolve()
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
    return target


def _check_file(target: Path, name: str, entry: dict) -> None:
    """The file's sha256; model.onnx is also checked to hold all its weights (read once for both)."""
    data = target.read_bytes() if name == "model.onnx" else None
    actual = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(target)
    if actual != entry["sha256"]:
        raise BundleError(
            f"bundle file {entry['path']!r} has sha256 {actual[:12]}..., the manifest says "
            f"{str(entry['sha256'])[:12]}...: the file was altered or damaged. Re-export or re-copy "
            "the bundle."
        )
    if data is not None:
        try:
            check_self_contained(data)
        except OnnxFileError as exc:
            raise BundleError(f"{entry['path']!r}: {exc}. Re-export the bundle with `python -m "
                              "training.fit SPEC`.") from None


def _read_models(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """The LLM table, checked: unique non-empty names, one finite vector of one length per LLM."""
    def bad(received: str) -> BundleError:
        return BundleError(f"{path.name}: {received}; allowed: columns model (text, unique, not null) and "
                           "embedding (lists of finite numbers, all of one length >= 1), at least one row. "
                           "The file was not written by routerdb; re-export the bundle.")
    try:
        with pq.ParquetFile(path) as source:  # not pq.read_table: it imports pyarrow.dataset (0.3-0.9 s)
            table = source.read()
    except (pa.ArrowException, OSError) as exc:
        raise bad(f"cannot be read as Parquet ({exc})") from None
    if not {"model", "embedding"} <= set(table.column_names):
        raise bad(f"columns {table.column_names}")
    names, emb = table.column("model"), table.column("embedding")
    if not pa.types.is_string(names.type) or not (pa.types.is_list(emb.type)
                                                   or pa.types.is_fixed_size_list(emb.type)):
        raise bad(f"column types model: {names.type}, embedding: {emb.type}")
    names_list = names.to_pylist()
    if not names_list or None in names_list or "" in names_list or len(set(names_list)) != len(names_list):
        raise bad(f"{len(names_list)} model names, some missing, empty or repeated" if names_list
                  else "no rows")
    emb = emb.combine_chunks()
    lengths = set(emb.value_lengths().to_pylist()) if pa.types.is_list(emb.type) else {emb.type.list_size}
    if emb.null_count or len(lengths) != 1 or 0 in lengths or not pa.types.is_floating(emb.type.value_type):
        raise bad(f"embeddings of lengths {sorted(x for x in lengths if x is not None)} "
                  f"({emb.null_count} missing) of type {emb.type.value_type}")
    values = emb.flatten()
    if values.null_count:
        raise bad(f"{values.null_count} missing numbers inside the embeddings")
    # from the buffer: Array.to_numpy imports pandas (0.3-0.6 s of a one-shot `routerdb score`)
    dtype = np.dtype({2: np.float16, 4: np.float32, 8: np.float64}[values.type.bit_width // 8])
    matrix = np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values),
                           offset=values.offset * dtype.itemsize).astype(np.float32)
    if not np.isfinite(matrix).all():
        raise bad("embeddings with NaN or infinite values")
    return tuple(names_list), matrix.reshape(len(names_list), lengths.pop())


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
    directory is swapped onto `target`; an existing bundle there is replaced only then.
    `verify(tmpdir)`, if given, checks the complete bundle before the swap and raises to stop it;
    a mapping it returns is added to the manifest (e.g. the measured export error).

    A failure or a kill at any point leaves `target` as it was (the previous bundle or nothing)
    or complete; temporary directories of a killed writer are removed by the next write.
    `target` must be new, empty, or a bundle: any other directory is refused, never deleted.
    """
    target = Path(target)
    check_replaceable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.clean_stale(target)
        tmp = atomic.staging_dir(target)
    except OSError as exc:
        raise _write_error(target, exc) from None
    try:
        files = write_files(tmp)
        _follow_umask_tree(tmp)  # safetensors and mkstemp write 0600: other users could not load it
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
        full["files"] = {
            name: {"path": rel, "sha256": sha256_file(tmp / rel), "bytes": (tmp / rel).stat().st_size}
            for name, rel in files.items()
        }
        _write_manifest(tmp, full)
        if verify is not None:
            _write_manifest(tmp, {**full, **(verify(tmp) or {})})
        atomic.fsync_tree(tmp)
        atomic.replace_dir(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(target, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote bundle %s", target)
    return target


def _follow_umask_tree(directory: Path) -> None:
    """Give every file and folder a writer put under `directory` the mode the umask gives."""
    for path in directory.rglob("*"):
        if not path.is_symlink():
            atomic.follow_umask(path)


def check_replaceable(target: Path, option: str = "output.bundle_dir") -> None:
    """Refuse a target that exists and is not a bundle: replacing it would delete someone's files.
    `option` is what the user set the target with, as the message names it."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise BundleError(f"bundle directory {str(target)!r} exists and is not a directory; refusing to "
                          f"replace it. Choose a new directory for the bundle ({option}).")
    if target.is_dir() and any(target.iterdir()):
        try:
            is_bundle = json.loads((target / MANIFEST).read_bytes()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError, RecursionError):
            is_bundle = False
        if not is_bundle:
            raise BundleError(
                f"{str(target)!r} is a non-empty directory that is not a routerdb bundle; writing the bundle "
                "there would delete its files, so nothing was written. Choose a new or empty directory "
                f"for the bundle ({option}), or remove this one yourself."
            )


def _write_error(target: Path, exc: OSError) -> OSError:
    return OSError(exc.errno, f"cannot write the bundle {str(target)!r}: {atomic.os_reason(exc)} "
                   f"({exc.filename or target.parent}). Nothing was written and any previous bundle there "
                   "is unchanged. Free disk space, fix the permissions, or choose another directory.")


def _write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    (directory / MANIFEST).write_text(manifest_text(manifest))
