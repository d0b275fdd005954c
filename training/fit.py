"""`routerdb-train fit SPEC.json`: train a router and export its bundle, as the spec says.

    routerdb-train fit examples/specs/demo.json                 # train, checkpoint, export
    routerdb-train fit examples/specs/demo.json --validate-only # check the spec, report all problems
    routerdb-train fit examples/specs/demo.json --resume        # continue an interrupted run

(`python -m training fit ...` and `python -m training.fit ...` run the same.)

Writes `output.run_dir/` (checkpoint/ each epoch, state/, train.log, spec.json, history.json)
and the verified ONNX bundle to `output.bundle_dir/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pyarrow as pa

from routerdb.atomic import check_writable, os_reason
from routerdb.bundle import check_replaceable
from training import command, preflight
from training.data import concat_pairs, load_aliases, load_pairs
from training.encoder.prompt_cache import PromptCache
from training.export import export_bundle
from training.router import TransformerEmbeddingModel
from training.specs import FitSpec, SpecError, load_spec

log = logging.getLogger("training.fit")


def fit(spec: FitSpec, *, resume: bool = False) -> Path:
    """Train the spec's router on its data, checkpointing into `output.run_dir`, and export the
    verified bundle to `output.bundle_dir`; returns the bundle's path. SpecError, before anything
    is written, for every problem `training.preflight` finds."""
    check(spec)
    run_dir = Path(spec.output.run_dir)
    check_outputs(spec)
    pairs = _training_data(spec)  # every row checked before the run writes its first file
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(spec.model_dump_json(indent=2))
    model = TransformerEmbeddingModel(spec.router_config())
    frozen_transformer = spec.finetuning.kind == "frozen" and spec.encoder.kind == "transformer"
    if frozen_transformer and spec.encoder.pooling == "auto":
        # a frozen transformer's prompt vectors never change: read them from build/cache/, encoding
        # (and storing) only the prompts not there yet (a static encoder is faster than the cache)
        model.frozen_vectors = PromptCache.for_encoder(spec.encoder.name, spec.encoder.max_length,
                                                       truncation=spec.encoder.truncation).vectors
    history = model.train(pairs, validation_split=spec.data.validation, run_dir=run_dir, resume=resume)
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    verify = model.validation_prompts[: spec.export.verify_prompts]
    bundle = export_bundle(model, spec.output.bundle_dir, verify or pairs["prompt"].to_pylist()[:8],
                           spec=spec.model_dump(mode="json"), opset=spec.export.opset,
                           tolerance=spec.export.tolerance, quantize=spec.export.quantize)
    log.info("bundle written to %s", bundle)
    return bundle


def _training_data(spec: FitSpec) -> pa.Table:
    aliases = load_aliases(spec.data.aliases) if spec.data.aliases else None
    pairs = concat_pairs([load_pairs(src, aliases=aliases) for src in spec.data.train])
    log.info("loaded %d pairs (%d prompts) from %d file(s)", pairs.num_rows,
             len(set(pairs["prompt"].to_pylist())), len(spec.data.train))
    return pairs


def check(spec: FitSpec, where: str = "<spec>", *, rows: bool = False) -> None:
    """SpecError listing every problem of `training.preflight.problems` (every data row read with
    `rows`), if any."""
    found = preflight.problems(spec, rows=rows)
    if found:
        raise SpecError("\n".join([f"{where}: {len(found)} problem(s) found before training:",
                                    *(f"  - {p}" for p in found)]))


def check_outputs(spec) -> None:
    """Fail before training, not after it, when an output directory cannot be written."""
    for field in ("run_dir", "bundle_dir"):
        path = Path(getattr(spec.output, field))
        folder = path if field == "run_dir" else path.parent
        try:
            check_writable(folder)
        except OSError as exc:
            raise OSError(exc.errno, f"output.{field} {str(path)!r} cannot be written: {os_reason(exc)}. "
                          f"Choose a path in a writable directory for output.{field}, or fix its "
                          "permissions.") from None
    check_replaceable(Path(spec.output.bundle_dir))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="path to a JSON spec (see examples/specs/)")
    parser.add_argument("--validate-only", action="store_true",
                        help="check the spec, the encoder, the outputs and every data row, and stop")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")


def run(args: argparse.Namespace) -> int:
    """Check the spec (every problem at once), then train and export, logging into the run's train.log."""
    spec = load_spec(args.spec)
    check(spec, args.spec, rows=args.validate_only)
    if args.validate_only:
        what = spec.encoder.name if spec.encoder.kind == "transformer" else f"static {spec.encoder.name}"
        print(f"{args.spec}: valid ({spec.finetuning.kind} fine-tuning of {what}, "
              f"{spec.epochs} epoch(s), {len(spec.data.train)} data file(s), every row read)")
        return command.OK
    check_outputs(spec)
    command.log_to_file(Path(spec.output.run_dir) / "train.log")
    fit(spec, resume=args.resume)
    return command.OK


COMMAND = command.Command("fit", "train a router from a JSON spec and export its verified bundle",
                          add_arguments, run, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.fit`: the same as `routerdb-train fit`."""
    return command.main(COMMAND, argv, prog="python -m training.fit")


if __name__ == "__main__":
    sys.exit(main())
