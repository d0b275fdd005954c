"""`python -m training.fit SPEC.json`: train a router and export its bundle, as the spec says.

    python -m training.fit examples/specs/demo.json                 # train, checkpoint, export
    python -m training.fit examples/specs/demo.json --validate-only # check the spec, report all problems
    python -m training.fit examples/specs/demo.json --resume        # continue an interrupted run

Writes `output.run_dir/` (checkpoint/ each epoch, state/, train.log, spec.json, history.json)
and the verified ONNX bundle to `output.bundle_dir/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("training.fit")


def fit(spec, *, resume: bool = False) -> Path:
    from training.data import read as data_mod
    from training.data.aliases import load_aliases
    from training.data.splits import split_by_prompt
    from training.export import export_bundle
    from training.model.router import TransformerEmbeddingModel

    run_dir = Path(spec.output.run_dir)
    check_outputs(spec)
    (run_dir / "spec.json").write_text(spec.model_dump_json(indent=2))
    aliases = load_aliases(spec.data.aliases) if spec.data.aliases else None
    pairs = data_mod.concat_pairs([data_mod.load_pairs(src, aliases=aliases) for src in spec.data.train])
    log.info("loaded %d pairs (%d prompts) from %d file(s)", pairs.num_rows,
             len(set(pairs["prompt"].to_pylist())), len(spec.data.train))
    model = TransformerEmbeddingModel(spec.router_config())
    if spec.finetuning.kind == "frozen" and spec.encoder.pooling == "auto":
        from training.encoder.prompt_cache import PromptCache, attach

        # a frozen encoder's prompt vectors never change: read them from build/cache/, encoding
        # (and storing) only the prompts not there yet
        attach(model, PromptCache.for_encoder(spec.encoder.name, spec.encoder.max_length,
                                              truncation=spec.encoder.truncation))
    history = model.train(pairs, validation_split=spec.data.validation, run_dir=run_dir, resume=resume)
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    _, val = split_by_prompt(pairs, spec.data.validation.fraction, spec.data.validation.seed)
    verify = sorted(set(val["prompt"].to_pylist()))[: spec.export.verify_prompts]
    bundle = export_bundle(model, spec.output.bundle_dir, verify or pairs["prompt"].to_pylist()[:8],
                           spec=spec.model_dump(mode="json"), opset=spec.export.opset,
                           tolerance=spec.export.tolerance, quantize=spec.export.quantize)
    log.info("bundle written to %s", bundle)
    return bundle


def check_outputs(spec) -> None:
    """Fail before training, not after it, when an output directory cannot be written."""
    from routerdb.bundle import check_replaceable

    for field in ("run_dir", "bundle_dir"):
        path = Path(getattr(spec.output, field))
        folder = path if field == "run_dir" else path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if isinstance(exc, (FileExistsError, NotADirectoryError)):
                reason = "a part of the path is a file, not a directory"
            raise OSError(exc.errno, f"output.{field} {str(path)!r} cannot be written: {reason}. Choose "
                          f"a path in a writable directory for output.{field}, or fix its permissions."
                          ) from None
    check_replaceable(Path(spec.output.bundle_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fit", description=__doc__.split("\n")[0])
    parser.add_argument("spec", help="path to a JSON spec (see examples/specs/)")
    parser.add_argument("--validate-only", action="store_true", help="check the spec and stop")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    args = parser.parse_args(argv)
    from training.specs import SpecError, load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.validate_only:
        print(f"{args.spec}: valid ({spec.finetuning.kind} fine-tuning of {spec.encoder.name}, "
              f"{spec.epochs} epoch(s), {len(spec.data.train)} data file(s))")
        return 0
    from training.export import ExportError

    try:
        check_outputs(spec)
        _setup_logging(Path(spec.output.run_dir))
        fit(spec, resume=args.resume)
    except (ValueError, OSError, ExportError, MemoryError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        _remove_handlers()
    return 0


_HANDLERS: list[logging.Handler] = []  # the handlers _setup_logging added to the root logger


def _remove_handlers() -> None:
    """Take main()'s handlers off the root logger, so a second main() in one process gets fresh ones."""
    for handler in _HANDLERS:
        logging.getLogger().removeHandler(handler)
        handler.close()
    _HANDLERS.clear()


def _setup_logging(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    _remove_handlers()
    _HANDLERS[:] = [logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")]
    for handler in _HANDLERS:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
