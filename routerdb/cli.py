"""`routerdb` command line: inspect a bundle, score prompts, run SQL with the routing functions.

    routerdb info BUNDLE                       the manifest in words
    routerdb score BUNDLE "prompt" ...         every LLM's score and the best LLM per prompt
    routerdb sql BUNDLE FILE.sql | "SELECT ..." run DuckDB SQL with route_score & co. registered
    routerdb rescore BUNDLE INPUT OUTPUT       add route_best and route_scores to every row of a log
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def _info(args) -> int:
    from routerdb.bundle import Bundle

    b = Bundle.load(args.bundle)
    m = b.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    ver = m.get("verification", {})
    ft = m.get("finetuning", {})
    lines = [
        f"bundle      {b.path}  (format {m['format']} v{m['format_version']}, "
        f"created {m.get('created', '?')})",
        f"encoder     {m['encoder']['name']} ({m['encoder']['origin']}), {ft.get('kind', '?')} fine-tuning; "
        f"{ft.get('merged', '')}",
        f"pooling     {m['pooling']}; max length {m['max_length']} tokens, "
        f"{m['tokenizer'].get('truncation', 'head')} truncation; "
        f"{len(m.get('feature_names') or [])} prompt features",
        f"LLMs        {len(b.model_names)} (embedding dim {b.model_embeddings.shape[1]}): "
        f"{', '.join(b.model_names)}",
        f"graph       opset {m['graph']['opset']}, quantize {m['graph']['quantize']}, "
        f"verified max |ONNX - torch| {ver.get('max_abs_diff', float('nan')):.2e} "
        f"on {ver.get('prompts', 0)} prompts",
        "versions    " + ", ".join(f"{k} {v}" for k, v in sorted(m.get("library_versions", {}).items())),
    ]
    history = m.get("history") or []
    if history:
        last = history[-1]
        lines.append(f"training    {len(history)} epoch(s); last validation accuracy "
                     f"{last.get('val_accuracy', float('nan')):.4f}, "
                     f"loss {last.get('val_loss', float('nan')):.4f}")
    print("\n".join(lines))
    return 0


def _score(args) -> int:
    from routerdb.scorer import Router

    router = Router(args.bundle)
    models = args.models.split(",") if args.models else list(router.models)
    scores = router.score(args.prompts, models)
    for prompt, row in zip(args.prompts, scores, strict=True):
        best = models[int(row.argmax())]
        print(f"{prompt[:70]!r}: best {best}")
        for name, value in sorted(zip(models, row, strict=True), key=lambda kv: -kv[1]):
            print(f"    {value:+.4f}  {name}")
    return 0


def _sql(args) -> int:
    import duckdb

    from routerdb.duckdb import register

    query = Path(args.query).read_text() if args.query.endswith(".sql") else args.query
    con = duckdb.connect(args.database or ":memory:")
    register(con, args.bundle)
    for name, value in args.set or []:
        con.execute(f"SET VARIABLE {name} = ?", [value])
    result = None
    for statement in _statements(query):
        result = con.sql(statement)
    if result is not None:
        result.show(max_width=args.width, max_rows=args.max_rows)
    return 0


def _variable(pair: str) -> tuple[str, object]:
    """`--set NAME=VALUE`; a value that reads as a number is passed as one."""
    name, sep, text = pair.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise argparse.ArgumentTypeError(f"{pair!r} is not NAME=VALUE with NAME a plain identifier; "
                                         "e.g. --set strong_share=0.2")
    for kind in (int, float):
        try:
            return name, kind(text)
        except ValueError:
            continue
    return name, text


def _rescore(args) -> int:
    from routerdb.rescore import rescore

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    out = rescore(args.bundle, args.input, args.output, prompt_column=args.prompt_column, models=models,
                  table=args.table, batch_rows=args.batch_rows, part_rows=args.part_rows,
                  progress=not args.no_progress)
    print(f"wrote {out}")
    return 0


def _statements(script: str) -> list[str]:
    import duckdb

    return [s.query for s in duckdb.extract_statements(script)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="routerdb", description="LLM routing from SQL.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="describe a bundle")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.set_defaults(run=_info)
    p = sub.add_parser("score", help="score prompts for every LLM")
    p.add_argument("bundle")
    p.add_argument("prompts", nargs="+")
    p.add_argument("--models", help="comma-separated LLM names (default: all)")
    p.set_defaults(run=_score)
    p = sub.add_parser("sql", help="run DuckDB SQL with route_score & co. registered")
    p.add_argument("bundle")
    p.add_argument("query", help="a .sql file or a SQL string")
    p.add_argument("--database", help="DuckDB database file (default: in memory)")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--max-rows", type=int, default=60)
    p.add_argument("--set", action="append", type=_variable, metavar="NAME=VALUE",
                   help="set a SQL variable before the script runs (getvariable('NAME')); repeatable")
    p.set_defaults(run=_sql)
    p = sub.add_parser("rescore", help="add route_best and route_scores to every row of a prompt log "
                       "(Parquet out; streaming, resumable after a kill)")
    p.add_argument("bundle")
    p.add_argument("input", help="a .parquet or .csv file, or a DuckDB database with --table")
    p.add_argument("output", help="the Parquet file to write")
    p.add_argument("--prompt-column", default="prompt", help="the column holding the prompt text")
    p.add_argument("--models", help="comma-separated LLM names to score (default: all)")
    p.add_argument("--table", help="the table to read when INPUT is a DuckDB database")
    p.add_argument("--batch-rows", type=int, default=8192, help="rows read and scored at a time")
    p.add_argument("--part-rows", type=int, default=100_000,
                   help="rows per part file (the most a resumed run redoes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_rescore)
    args = parser.parse_args(argv)
    from routerdb.bundle import BundleError
    from routerdb.rescore import RescoreError
    from routerdb.scorer import UnknownModelError

    try:
        return args.run(args)
    except (BundleError, UnknownModelError, RescoreError, OSError) as exc:  # OSError: disk full, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # duckdb errors: show the message, not a traceback
        if type(exc).__module__.startswith(("duckdb", "_duckdb")):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
