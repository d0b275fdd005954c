"""`routerdb-train add-model RUN_OR_BUNDLE records.parquet --name NEW --out NEW_BUNDLE`

Adds an LLM to a trained router without retraining its encoder or head. LLMs are rows of the
bundle's LLM table; the new LLM's row comes from its comparison records, one of two ways:

* a router with a phase-1 LLM embedder (`embedding_spec.kind` frozen, finetunable or attention)
  embeds it from its records (a few hundred are enough; at most `profile_records` are used);
* any other router (kind "learned", the recommended spec) fits the row against the trained head:
  the Bradley-Terry likelihood of its records against known LLMs, under a prior fitted to the
  known rows (`training.llm_embeddings.row_fit`), with the prompts' vectors from the bundle's own
  graph (its `prompt_vectors` output).

A new bundle is written with the same `model.onnx` and `tokenizer.json`, the LLM table plus one
row, and a manifest that records where the row came from; the known LLMs' scores are checked
unchanged before it is written.

    routerdb-train add-model build/router/bundle new_llm.parquet --name my-llm --out build/with-my-llm

RUN_OR_BUNDLE is a bundle directory or a run directory (`output.run_dir` of the spec: the
embedder from `checkpoint/`, the bundle from the spec's `output.bundle_dir`, or `--bundle`).
records.parquet is pairwise or per-model-scores data (as `training.data.load_pairs` reads) in which
NEW is compared with LLMs the router knows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from routerdb.bundle import Bundle, check_replaceable, models_table, write_bundle
from routerdb.router import Router
from training import command
from training.data import load_aliases, load_pairs
from training.formats import EMBEDDER_CONFIG, EMBEDDER_WEIGHTS
from training.llm_embeddings.embedder import LLMEmbedder
from training.llm_embeddings.records import Records, comparison_records
from training.llm_embeddings.row_fit import fit_llm_row, known_scores, own_scores
from training.model.heads import build_head
from training.specs import RouterConfig
from training.verification import ExportError, bundle_scores, max_gap

log = logging.getLogger("training.add_model")

MIN_RECORDS = 50  # fewer records than this give a noisy embedding: warned, not refused
# The row fit is a few small matrices: torch's default pool (one thread per core) only adds
# waiting. 270 records took 3 min 26 s on a busy 2-core machine with the default, 14-17 s on one.
TORCH_THREADS = 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on `n` torch threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_source(source: str | Path, bundle: str | Path | None = None):
    """(Bundle, LLMEmbedder or None) from a bundle or run directory."""
    source = Path(source)
    if (source / "manifest.json").is_file():
        loaded = Bundle.load(source)
        files = loaded.manifest["files"]
        if EMBEDDER_CONFIG not in files:
            return loaded, None
        meta = json.loads((loaded.path / files[EMBEDDER_CONFIG]["path"]).read_text(encoding="utf-8"))
        tensors = load_file(str(loaded.path / files[EMBEDDER_WEIGHTS]["path"]))
        return loaded, LLMEmbedder.from_files(meta, tensors, where=str(source))
    spec_file = source / "spec.json"
    if bundle is None and not spec_file.is_file():
        raise FileNotFoundError(
            f"{str(source)!r} is neither a bundle (manifest.json) nor a run directory (spec.json); "
            "pass the bundle directory, or a run directory with --bundle BUNDLE.")
    if bundle is None:
        bundle = json.loads(spec_file.read_text(encoding="utf-8"))["output"]["bundle_dir"]
    try:
        embedder = LLMEmbedder.load(source)
    except FileNotFoundError:
        embedder = None  # a router of learned LLM vectors: the row is fitted against its head
    return Bundle.load(bundle), embedder


def add_model(source: str | Path, records_path, name: str, out: str | Path, *, bundle=None,
              aliases=None, refit: bool = False) -> Path:
    """Write `out`: the router of `source` plus LLM `name`, its row from its records (the fit on
    `TORCH_THREADS` torch threads, whatever the caller's setting); with `refit`, the router with
    known LLM `name`'s row re-fitted from these records instead (its own records correct a level
    the training data got wrong), every other row unchanged."""
    check_replaceable(Path(out), "--out")  # before any work
    with torch_threads(TORCH_THREADS):
        return _add_model(source, records_path, name, out, bundle=bundle, aliases=aliases, refit=refit)


def _add_model(source, records_path, name: str, out, *, bundle, aliases, refit: bool) -> Path:
    loaded, embedder = resolve_source(source, bundle)
    _check_name(loaded, name, refit)
    pairs = load_pairs(records_path, aliases=load_aliases(aliases) if aliases else None)
    records = comparison_records(pairs).of(name)
    if len(records) < MIN_RECORDS:
        log.warning("only %d comparison records of %s; its row will be noisy (a few hundred are "
                    "recommended)", len(records), name)
    if embedder is not None:
        vector, how = _embed(embedder, records, name, loaded.model_embeddings.shape[1]), "embedded"
    else:
        vector = fitted_row(loaded, records, pairs, exclude=name if refit else None)
        how = "fitted against the head"
    entry = _added_entry(loaded, embedder, records, name, str(records_path)) | {"row": how}
    manifest = {k: v for k, v in loaded.manifest.items()
                if k not in ("format", "format_version", "files", "manifest_sha256")}
    names, rows = list(loaded.model_names), np.array(loaded.model_embeddings)
    if refit:
        rows[names.index(name)] = vector[0]
        manifest["refitted_models"] = [*manifest.get("refitted_models", []), entry]
    else:
        names, rows = [*names, name], np.vstack([rows, vector])
        manifest["models"] = {**manifest.get("models", {}), "count": len(names)}
        manifest["added_models"] = [*manifest.get("added_models", []), entry]
    table = models_table(tuple(names), rows)
    check_prompts = [records.prompts[p] for p in np.unique(records.prompt)[:16]]
    log.info("%s %s (%s) from %d of its %d records (%d prompts) in %s", "re-fitting" if refit else "adding",
             name, how, entry["used_records"], len(records), entry["prompts"], loaded.path)
    changed = names.index(name)
    return write_bundle(out, manifest, lambda tmp: _write_files(loaded, embedder, table, tmp),
                        verify=lambda tmp: _verify(loaded, tmp, check_prompts, changed))


def _check_name(loaded: Bundle, name: str, refit: bool) -> None:
    known = name in loaded.model_names
    if refit and not known:
        raise ValueError(f"--refit re-fits an LLM the router knows, but {name!r} is not among the "
                         f"{len(loaded.model_names)} LLMs of {loaded.path}; drop --refit to add it as a new "
                         "LLM.")
    if not refit and known:
        raise ValueError(f"LLM {name!r} is already in {loaded.path} ({len(loaded.model_names)} LLMs); "
                         "pick another --name, pass --refit to re-fit its row from these records, or add "
                         "it to the original bundle without it.")


def fitted_row(loaded: Bundle, records: Records, pairs=None, exclude: str | None = None) -> np.ndarray:
    """[1, D]: the new LLM's row fitted against the bundle's head (`training.llm_embeddings.row_fit`).

    `exclude`: a known LLM, re-fitted. Its own row does not oppose it; the prior is centred on that
    row (the records correct it rather than replace it), and its comparisons alone are fitted, not
    its own per-model scores: those are on the records' scale, which a source the router never saw
    does not share with the other rows (a pointwise re-fit from 200 RouterBench records lost on 7 of
    7 LLMs there; comparisons around its own row gained 4.2 points on average, docs/quality.md).
    A new LLM's own scores are read against the known LLMs' scores on the same prompts (where the
    records have them: per-model scores), which calibrate the head's difficulty on the user's source
    (`row_fit` `known_scores`; on a source left out, +3.2 points over reading them as they are)."""
    head_entry = loaded.manifest.get("head")
    if not head_entry or head_entry.get("file") not in loaded.manifest["files"]:
        raise ValueError(f"bundle {str(loaded.path)!r} has neither an LLM embedder nor the head's weights "
                         "(bundles exported before routerdb wrote head.safetensors); re-export it with "
                         "python -m training.fit to add LLMs to it.")
    spec = loaded.manifest["spec"]
    config = RouterConfig.from_stored(spec)
    head = build_head(config.head, int(head_entry["prompt_dim"]), int(head_entry["llm_dim"]))
    head.load_state_dict(load_file(str(loaded.path / loaded.manifest["files"][head_entry["file"]]["path"])))
    router = Router.for_verification(loaded)
    vectors = router.prompt_vectors(list(records.prompts))
    pointwise = pairs is not None and exclude is None
    scores = own_scores(pairs, records.llms[records.llm[0]], records.prompts) if pointwise else None
    keep = [j for j, m in enumerate(loaded.model_names) if m != exclude]
    known = [loaded.model_names[j] for j in keep]
    table = np.asarray(loaded.model_embeddings)
    own_row = table[loaded.model_names.index(exclude)] if exclude is not None else None
    return fit_llm_row(head, vectors, records, known, table[keep],
                       own_scores=scores, pointwise_weight=config.loss.pointwise_weight if pointwise else 0.0,
                       prior_mean=own_row,
                       known_scores=known_scores(pairs, known, records.prompts) if pointwise else None)


def _embed(embedder: LLMEmbedder, records: Records, name: str, width: int) -> np.ndarray:
    """[1, D]: the new LLM's row of the LLM table, from the phase-1 embedder."""
    vector = embedder.embed_llms(records, [name])
    if vector.shape[1] != width:
        raise ValueError(f"the embedding model gives {vector.shape[1]}-dim vectors but the bundle's LLM "
                         f"table has {width}; use the embedding model the router was trained with.")
    return vector


def _added_entry(loaded: Bundle, embedder: LLMEmbedder | None, records: Records, name: str,
                 data: str) -> dict:
    """The manifest's record of an added LLM: where its vector came from."""
    opponents = sorted({records.llms[o] for o in np.unique(records.opponent)})
    used = len(records) if embedder is None else min(len(records), embedder.spec.profile_records)
    return {"name": name, "records": len(records), "used_records": used,
            "prompts": int(len(np.unique(records.prompt))), "opponents": opponents,
            "unknown_opponents": [o for o in opponents if o not in set(loaded.model_names)],
            "data": data, "base_bundle_digest": loaded.digest,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _write_files(loaded: Bundle, embedder: LLMEmbedder, table, tmp: Path) -> dict[str, str]:
    """The base bundle's files with the new LLM table (and the embedder, from a run directory)."""
    files = {}
    for key, item in loaded.manifest["files"].items():
        if key != "models.parquet":
            shutil.copyfile(loaded.path / item["path"], tmp / key)
            files[key] = key
    if embedder is not None and EMBEDDER_CONFIG not in files:  # from a run directory
        embedder.save(tmp)
        files.update({EMBEDDER_CONFIG: EMBEDDER_CONFIG, EMBEDDER_WEIGHTS: EMBEDDER_WEIGHTS})
    pq.write_table(table, tmp / "models.parquet")
    return {**files, "models.parquet": "models.parquet"}


def _verify(loaded: Bundle, tmp: Path, prompts: list[str], changed: int) -> dict:
    """The other LLMs score as before; the added (or re-fitted) one, column `changed`, scores finite."""
    before, after = bundle_scores(loaded, prompts), bundle_scores(tmp, prompts)
    others = [j for j in range(after.shape[1]) if j != changed]
    diff = max_gap(after[:, others], before[:, others])  # added: the others are all of before
    if diff > 1e-5 or not np.isfinite(after).all():
        raise ExportError(f"the new bundle changes the known LLMs' scores by {diff:.3g}; not written")
    return {"add_model_check": {"prompts": len(prompts), "max_abs_diff_known_llms": diff}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a bundle directory, or a run directory (output.run_dir)")
    parser.add_argument("records", help="pairwise or per-model-scores data comparing NEW with known LLMs")
    parser.add_argument("--name", required=True, help="the new LLM, as spelled in the records")
    parser.add_argument("--out", required=True, help="directory of the new bundle")
    parser.add_argument("--bundle", help="with a run directory: its bundle, if not the spec's bundle_dir")
    parser.add_argument("--aliases", help="model_aliases.json mapping spellings to one name")
    parser.add_argument("--refit", action="store_true",
                        help="NAME is a known LLM: re-fit its row from these records (the others unchanged)")


def run(args: argparse.Namespace) -> int:
    out = add_model(args.source, args.records, args.name, args.out, bundle=args.bundle, aliases=args.aliases,
                    refit=args.refit)
    print(f"wrote {out}: {args.name} {'re-fitted' if args.refit else 'added'}")
    return command.OK


COMMAND = command.Command("add-model", "add an LLM to a trained router from its comparison records "
                          "(or re-fit a known one's row, --refit)", add_arguments, run, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.add_model`: the same as `routerdb-train add-model`."""
    return command.main(COMMAND, argv, prog="python -m training.add_model")


if __name__ == "__main__":
    sys.exit(main())
