"""`routerdb` command line: inspect a bundle, score prompts, run SQL with the routing functions.

    routerdb info BUNDLE                       the manifest in words
    routerdb score BUNDLE "prompt" ...         every LLM's score and the best LLM per prompt
    routerdb sql BUNDLE (-f FILE | -c SQL | --recipe NAME)   run DuckDB SQL with route_score & co.
    routerdb rescore BUNDLE INPUT OUTPUT       add route_best and route_scores to every row of a log
    routerdb report BUNDLE LOG --out FILE      an HTML report (plots) of routing on a prompt log

Errors are one line on stderr (exit 2): what was received, what is allowed, how to fix it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import duckdb

from routerdb import recipes
from routerdb.bundle import Bundle
from routerdb.duckdb import register
from routerdb.inputs import llm_names
from routerdb.log_input import BATCH_ROWS
from routerdb.prompt_column import ON_INVALID_UTF8
from routerdb.report import report
from routerdb.rescore import PART_ROWS, RescoreJob, run_job
from routerdb.router import Router, UnknownModelError

# the demo sample of a source checkout: the recipes' defaults read it when a table is not set
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "llmrouter_sample.parquet"


def _info(args) -> int:
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
    router = Router(args.bundle)
    models = llm_names(args.models) if args.models is not None else list(router.models)
    scores = router.score(args.prompts, models)
    for prompt, row in zip(args.prompts, scores, strict=True):
        best = models[int(row.argmax())]
        print(f"{prompt[:70]!r}: best {best}")
        for name, value in sorted(zip(models, row, strict=True), key=lambda kv: -kv[1]):
            print(f"    {value:+.4f}  {name}")
    return 0


def _sql(args) -> int:
    query = _script(args)
    con = duckdb.connect(args.database or ":memory:")
    register(con, args.bundle)
    variables = dict(args.set or [])
    if "sample_path" not in variables and SAMPLE.is_file():  # the demo defaults work from any directory
        variables["sample_path"] = str(SAMPLE)
    for name, value in variables.items():
        con.execute(f"SET VARIABLE {name} = ?", [value])
    result = None
    for statement in statements(query):
        result = con.sql(statement)
    if result is not None:
        result.show(max_width=args.width, max_rows=args.max_rows)
    return 0


def _script(args) -> str:
    """The SQL to run: -f FILE, -c SQL, --recipe NAME, or QUERY (an existing file is read, anything
    else is SQL)."""
    given = [x for x in (args.query, args.file, args.command, args.recipe) if x is not None]
    if len(given) != 1:
        raise ValueError(f"routerdb sql got {len(given)} scripts; allowed: exactly one of -f FILE, -c SQL, "
                         "--recipe NAME or QUERY. E.g. routerdb sql BUNDLE --recipe demo")
    if args.recipe is not None:
        return recipes.recipe_text(args.recipe)
    path = args.file if args.file is not None else args.query if args.command is None else None
    if path is not None and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8")
    if args.file is not None:
        raise FileNotFoundError(f"-f {args.file!r}: no such file; pass the path of a SQL file, or the SQL "
                                "itself with -c.")
    text = args.command if args.command is not None else args.query
    if args.command is None and re.fullmatch(r"[^\s]*[./][^\s]*", text):
        raise FileNotFoundError(f"{text!r} is no file here and reads as a file name, not SQL; pass an "
                                "existing file (-f FILE), or SQL with -c to run it as it is.")
    return text


_TYPES = {"text": str, "int": int, "float": float, "bool": None}


def parse_variable(pair: str) -> tuple[str, object]:
    """`--set NAME=VALUE` (text, as given) or `--set NAME:TYPE=VALUE` (TYPE int, float, bool, text)."""
    key, sep, text = pair.partition("=")
    name, _, kind = key.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or (kind and kind not in _TYPES):
        raise argparse.ArgumentTypeError(
            f"{pair!r} is not NAME=VALUE or NAME:TYPE=VALUE with NAME a plain identifier and TYPE one of "
            f"{', '.join(_TYPES)}; e.g. --set strong_model=gpt-4 or --set strong_share:float=0.2")
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"--set {pair}: {text!r} is not a bool; allowed: true, false")
        return name, text.lower() == "true"
    try:
        return name, _TYPES[kind or "text"](text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {pair}: {text!r} is not a valid {kind}") from None


def _rescore(args) -> int:
    job = RescoreJob(Path(args.input), Path(args.output), prompt_column=args.prompt_column,
                     models=tuple(llm_names(args.models)) if args.models is not None else None,
                     table=args.table,
                     cast_prompt=args.cast_prompt, on_invalid_utf8=args.on_invalid_utf8,
                     overwrite=args.overwrite, batch_rows=args.batch_rows, part_rows=args.part_rows,
                     progress=not args.no_progress)
    print(f"wrote {run_job(args.bundle, job)}")
    return 0


def statements(script: str) -> list[str]:
    """The statements of a SQL script, as DuckDB splits them."""
    return [s.query for s in duckdb.extract_statements(script)]


SQL_HELP = """The SQL to run: -f FILE (a script), -c SQL (a statement or script), or QUERY: an
existing file is read as a script, anything else is run as SQL (a single word that reads as a file
name but is no file, such as q.sql, is an error rather than SQL). Variables: --set NAME=VALUE sets
getvariable('NAME') to the text VALUE, as given (--set id=007 is '007'); --set NAME:TYPE=VALUE with
TYPE int, float, bool or text types it (--set strong_share:float=0.2). The shipped recipes
(--recipe NAME; the files are sql/ of the checkout, routerdb/sql/ installed) check and cast their
variables, so plain --set works for them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routerdb", description="LLM routing from SQL.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="describe a bundle")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.set_defaults(run=_info)
    p = sub.add_parser("score", help="score prompts for every LLM")
    p.add_argument("bundle")
    p.add_argument("prompts", nargs="+")
    p.add_argument("--models", help="comma-separated LLM names (default: all; spaces around them ignored)")
    p.set_defaults(run=_score)
    p = sub.add_parser("sql", help="run DuckDB SQL with route_score & co. registered", description=SQL_HELP)
    p.add_argument("bundle")
    p.add_argument("query", nargs="?", help="a SQL file that exists, or SQL (see below)")
    p.add_argument("-f", "--file", help="a SQL script file")
    p.add_argument("-c", "--command", help="SQL to run as it is")
    p.add_argument("--recipe", help=f"a shipped SQL recipe: {', '.join(recipes.names())}")
    p.add_argument("--database", help="DuckDB database file (default: in memory)")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--max-rows", type=int, default=60)
    p.add_argument("--set", action="append", type=parse_variable, metavar="NAME[:TYPE]=VALUE",
                   help="set a SQL variable before the script runs (getvariable('NAME')); repeatable")
    p.set_defaults(run=_sql)
    _rescore_parser(sub)
    _report_parser(sub)
    return parser


def _rescore_parser(sub) -> None:
    p = sub.add_parser("rescore", help="add route_best and route_scores to every row of a prompt log "
                       "(Parquet out; streaming, resumable after a kill)")
    p.add_argument("bundle")
    p.add_argument("input", help="a Parquet, CSV / TSV (also .gz; columns read as text) or JSON Lines file, "
                   "or a DuckDB database with --table")
    p.add_argument("output", help="the .parquet file to write (an existing file rescore did not write is "
                   "refused without --overwrite)")
    p.add_argument("--prompt-column", default="prompt", help="the column holding the prompt text")
    p.add_argument("--cast-prompt", action="store_true", help="score the text form of a prompt column "
                   "that is not text (numbers, booleans, dates); the column is written unchanged")
    p.add_argument("--on-invalid-utf8", choices=ON_INVALID_UTF8, default="error",
                   help="a prompt whose bytes are not UTF-8: stop naming it (error), or score it with "
                   "U+FFFD in place of the bad bytes (replace); the column is written as it was")
    p.add_argument("--models", help="comma-separated LLM names to score (default: all)")
    p.add_argument("--table", help="the table to read when INPUT is a DuckDB database")
    p.add_argument("--overwrite", action="store_true", help="replace an output file rescore did not write")
    p.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help="rows read and scored at a time")
    p.add_argument("--part-rows", type=int, default=PART_ROWS,
                   help="rows per part file (the most a resumed run redoes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_rescore)


def _report(args) -> int:
    out = report(args.bundle, args.log, args.out, prices=args.prices, strong=args.strong, weak=args.weak,
                 strong_share=args.strong_share, prompt_column=args.prompt_column, table=args.table,
                 progress=not args.no_progress)
    print(f"wrote {out}")
    return 0


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML file: which LLM the router picks on a prompt "
                       "log, score distributions, the cost-quality curve and the threshold table")
    p.add_argument("bundle")
    p.add_argument("log", help="a .parquet or .csv prompt log, or a DuckDB database with --table; with "
                   "model and score columns (one row per prompt and LLM) it also gets the measured curve")
    p.add_argument("--out", required=True, help="the .html file to write")
    p.add_argument("--prices", help="CSV: model, usd_per_1m_input_tokens, usd_per_1m_output_tokens "
                   "(default: the recipes' made-up demo prices)")
    p.add_argument("--strong", help="the strong LLM of the threshold table (default: highest mean score)")
    p.add_argument("--weak", help="the weak LLM of the threshold table (default: lowest mean score)")
    p.add_argument("--strong-share", type=float, default=0.2, help="the share of prompts to send to the "
                   "strong LLM, in [0, 1] (default 0.2)")
    p.add_argument("--prompt-column", default="prompt", help="the column holding the prompt text")
    p.add_argument("--table", help="the table to read when LOG is a DuckDB database")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_report)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback
        resume = " Run the same command again to resume from its last complete part." if (
            args.run is _rescore) else ""
        print(f"interrupted.{resume}", file=sys.stderr)
        return 130
    except Exception as exc:
        duckdb_error = type(exc).__module__.startswith(("duckdb", "_duckdb"))
        if duckdb_error:  # show the message, not a traceback
            print(f"error: {one_line(str(exc))}", file=sys.stderr)
            return 2
        # ours; OSError: disk full, no file; ImportError: an optional extra not installed (it says which)
        if isinstance(exc, (ValueError, UnknownModelError, OSError, ImportError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


def one_line(message: str) -> str:
    """A DuckDB message's first line: what went wrong (the rest quotes the SQL, or suggests names)."""
    first = message.strip().splitlines()[0] if message.strip() else message
    return first.removeprefix("Invalid Input Error: ")  # the recipes' own checks say all in one line


if __name__ == "__main__":
    sys.exit(main())
