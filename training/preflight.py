"""What can be checked about a spec before training, all at once and without writing anything.

`python -m training.fit SPEC --validate-only` prints these problems; a run checks the same before
it writes its first file, so a run that would fail on a missing file or an unwritable directory
fails in seconds, not after an hour of training:

* every data file exists, is a file, can be read, and has a known schema (from its header);
  with `rows` (`--validate-only`) every row is read and checked as training reads it, and LLM
  names across the files too (a run reads them before it writes anything);
* the aliases file reads; the encoder (and a phase-1 embedder's own encoder) is a local
  directory, an installed packaged copy, or a hub id (cached, where HF_HUB_OFFLINE is set);
  `load_embedding_model_from` holds an LLM embedder;
* `output.run_dir` is new, empty or a routerdb run directory; `output.bundle_dir` is new, empty
  or a routerdb bundle; both can be created and written.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from routerdb.bundle import BundleError, check_replaceable
from training.data import DataError, concat_pairs, load_aliases, load_pairs
from training.data.read import peek_schema
from training.encoder.finetuning import STATIC_METHODS
from training.encoder.pretrained import resolve_encoder
from training.llm_embeddings.embedder import find_embedding_model
from training.specs import FitSpec

RUN_FILES = ("spec.json", "train.log", "checkpoint", "state", "history.json")  # a run directory's own


def problems(spec: FitSpec, *, rows: bool = False) -> list[str]:
    """Every problem found, each naming the spec field, what it holds and the fix; [] if none.
    With `rows`, every row of the data is read and checked (else each file's header)."""
    return [*_data(spec, rows), *_encoders(spec), *_outputs(spec)]


def _data(spec: FitSpec, rows: bool) -> list[str]:
    out, aliases = [], None
    if spec.data.aliases:
        try:
            aliases = load_aliases(spec.data.aliases)
        except (OSError, DataError) as exc:
            out.append(f"data.aliases: {exc}")
    tables = []
    for k, path in enumerate(spec.data.train):
        try:
            if not os.access(path, os.R_OK) and Path(path).is_file():
                raise PermissionError(f"{path}: cannot be read (permission denied); fix its permissions")
            peek_schema(path)
            if rows:
                tables.append(load_pairs(path, aliases=aliases))
        except (OSError, DataError) as exc:
            out.append(f"data.train[{k}]: {exc}")
    if len(tables) > 1 and len(tables) == len(spec.data.train):
        try:
            concat_pairs(tables)
        except DataError as exc:
            out.append(f"data.train: {exc}")
    return out


def _encoders(spec: FitSpec) -> list[str]:
    out = [f"encoder.name: {p}" for p in _encoder_problem(spec.encoder.name)]
    if spec.encoder.kind == "static" and spec.finetuning.kind not in STATIC_METHODS:
        out.append(f"finetuning.kind: {spec.finetuning.kind!r} needs a transformer, but encoder.kind is "
                   f"'static'; use one of {', '.join(STATIC_METHODS)}.")
    other = getattr(spec.embedding_spec, "encoder", None)
    if other:
        out += [f"embedding_spec.encoder: {p}" for p in _encoder_problem(other)]
    if spec.load_embedding_model_from:
        try:
            find_embedding_model(spec.load_embedding_model_from)
        except FileNotFoundError as exc:
            out.append(f"load_embedding_model_from: {exc}")
    return out


def _encoder_problem(name: str) -> list[str]:
    try:
        ref = resolve_encoder(name)
    except FileNotFoundError as exc:
        return [str(exc)]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if ref.origin == "hub" and offline and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        return [f"{name!r} is not a local directory or an installed packaged copy, and HF_HUB_OFFLINE is "
                "set with no cached copy of it. Point encoder.name at a directory saved by "
                "`save_pretrained`, install its packaged copy, or unset HF_HUB_OFFLINE to download it."]
    return []


def _outputs(spec: FitSpec) -> list[str]:
    out = []
    run_dir, bundle_dir = Path(spec.output.run_dir), Path(spec.output.bundle_dir)
    if run_dir.exists() and not run_dir.is_dir():
        out.append(f"output.run_dir {str(run_dir)!r} is a file, not a directory; choose a directory")
    elif run_dir.is_dir() and any(run_dir.iterdir()) and not any((run_dir / f).exists() for f in RUN_FILES):
        out.append(f"output.run_dir {str(run_dir)!r} is a non-empty directory that is not a routerdb run "
                   f"(none of {', '.join(RUN_FILES)}); training would write among its files. Choose a new "
                   "or empty directory, or an earlier run's output.run_dir.")
    try:
        check_replaceable(bundle_dir)
    except BundleError as exc:
        out.append(f"output.bundle_dir: {exc}")
    for field, path in (("run_dir", run_dir), ("bundle_dir", bundle_dir.parent)):
        problem = _unwritable(path)
        if problem:
            out.append(f"output.{field} {str(getattr(spec.output, field))!r} cannot be written: {problem}. "
                       f"Choose a path in a writable directory for output.{field}, or fix its permissions.")
    return out


def _unwritable(path: Path) -> str | None:
    """Why `path` (a directory to create or write in) cannot be written, or None; creates nothing."""
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{str(existing)!r} is not writable (permission denied)"
    return None
