"""`routerdb report BUNDLE LOG --out report.html`: what routing would do on a prompt log, in pictures.

    routerdb report build/demo/bundle logs.parquet --out report.html [--prices prices.csv]
                    [--strong big-llm --weak small-llm] [--strong-share 0.2]

One self-contained HTML file (plots embedded as PNG, no network when it is viewed) with the log's
size and the bundle's identity, the share of the log's distinct prompts each LLM would get, every
LLM's score distribution, the cost-quality curve under a price table, and the strong / weak
threshold table. The last two are the shipped SQL recipes run on the log (`routerdb.recipes`):
`strong_share_threshold.sql`, `cost_routing.sql` (the predicted curve: mean route_score against
mean cost at every cost weight of its budget grid) and, when the log has measured quality
(`model` and `score` columns, one row per prompt and LLM, optional `cost`),
`cost_quality_curve.sql` (the measured curve, each LLM alone and the oracle). So the report's
numbers are the recipes' numbers; the HTML also carries them as JSON
(`<script type="application/json" id="routerdb-report">`).

The log is read into memory (only its prompt column, and `model`, `score`, `cost` when labelled).
The distinct prompts are scored once, with a progress bar, into the Router's cache, which every
recipe then reads (a log of more distinct prompts than the cache holds, 100,000, is encoded again
by the recipes). Plots need matplotlib: `pip install "routerdb[report]"`.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from routerdb import atomic
from routerdb.duckdb import register
from routerdb.log_input import RescoreError, open_input
from routerdb.recipes import run_recipe
from routerdb.report_html import ReportData, check_plotting, render
from routerdb.router import Router, UnknownModelError

PRICE_COLUMNS = ("model", "usd_per_1m_input_tokens", "usd_per_1m_output_tokens")
CHUNK = 256  # prompts scored per progress-bar step


class ReportError(ValueError):
    """The log, the prices or the options do not make a report."""


def report(bundle: str | os.PathLike[str], log: str | os.PathLike[str], out: str | os.PathLike[str], *,
           prices: str | os.PathLike[str] | None = None, strong: str | None = None, weak: str | None = None,
           strong_share: float = 0.2, prompt_column: str = "prompt", table: str | None = None,
           progress: bool = True) -> Path:
    """Write the report of `log` under `bundle` to `out` (an .html file); returns its path."""
    check_plotting()  # before any scoring: a missing plotting library is said at once
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out {str(out)!r}; allowed: a file named .html. E.g. --out report.html")
    data = compute(bundle, log, prices=prices, strong=strong, weak=weak, strong_share=strong_share,
                   prompt_column=prompt_column, table=table, progress=progress)
    atomic.atomic_write_text(out, render(data))
    return out


def compute(bundle, log, *, prices=None, strong=None, weak=None, strong_share: float = 0.2,
            prompt_column: str = "prompt", table: str | None = None, progress: bool = True) -> ReportData:
    """The report's numbers (no plotting): the log scored, then the recipes run on it."""
    if not 0 <= strong_share <= 1:
        raise ReportError(f"strong share {strong_share}; allowed: a number in [0, 1], e.g. 0.2")
    with duckdb.connect() as con:
        return _compute(con, bundle, log, prices, strong, weak, strong_share, prompt_column, table, progress)


def _compute(con, bundle, log, prices, strong, weak, strong_share, prompt_column, table,
             progress) -> ReportData:
    router = register(con, bundle)
    for name in (strong, weak):
        if name is not None and name not in router.models:
            raise UnknownModelError([name], router.models)
    log_table = _load_log(con, log, prompt_column, table)
    priced = _load_prices(con, prices, router) if prices is not None else "demo_prices"
    _score_prompts(con, router, progress)
    data = ReportData(_bundle_facts(router), _log_facts(con, log, log_table),
                      str(prices) if prices is not None else "")
    data.shares = _rows(con.sql("SELECT route_best(prompt) AS llm, count(*) AS prompts FROM report_prompts "
                                "GROUP BY llm ORDER BY prompts DESC, llm"))
    data.scores = {m: s for m, s in con.execute(
        "SELECT model, list(route_score(prompt, model) ORDER BY prompt) FROM report_prompts "
        "CROSS JOIN router_models GROUP BY model ORDER BY model").fetchall()}
    with tempfile.TemporaryDirectory() as tmp:
        sample = _sample_stand_in(con, Path(tmp))
        data.tables = _recipe_tables(con, sample, priced, strong, weak, strong_share)
    return data


def _load_log(con, log, prompt_column: str, table: str | None) -> pa.Table:
    source = open_input(log, table).reader.read_all()
    if prompt_column not in source.column_names:
        raise ReportError(f"no column {prompt_column!r} in {log}; its columns are {source.column_names}. "
                          "Pass the prompt column with --prompt-column.")
    kind = source.schema.field(prompt_column).type
    value = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not (pa.types.is_string(value) or pa.types.is_large_string(value)):
        raise ReportError(f"column {prompt_column!r} of {log} is {kind}; allowed: text. Pass the column "
                          "holding the prompt text with --prompt-column.")
    labelled = {"model", "score"} <= set(source.column_names) and prompt_column != "model"
    columns = {"prompt": source[prompt_column].cast(pa.large_string())}
    if labelled:
        cost = source["cost"] if "cost" in source.column_names else pa.nulls(len(source), pa.float64())
        columns |= {"model": source["model"], "score": source["score"], "cost": cost}
    con.register("report_source", pa.table(columns))
    con.execute("CREATE TEMP TABLE report_log AS SELECT * FROM report_source")
    con.unregister("report_source")
    con.execute("CREATE TEMP TABLE report_prompts AS SELECT DISTINCT prompt FROM report_log "
                "WHERE prompt IS NOT NULL ORDER BY prompt")
    if con.execute("SELECT count(*) FROM report_prompts").fetchall()[0][0] == 0:
        raise ReportError(f"{log} has no prompt to report on ({len(source)} rows, none with a "
                          f"{prompt_column!r}); pass a log with prompts.")
    return source


def _load_prices(con, prices, router: Router) -> str:
    """The price sheet as table report_prices (the recipes' prices_table)."""
    path = Path(prices)
    if not path.is_file():
        raise FileNotFoundError(f"--prices {str(path)!r}: no such file; pass a CSV with columns "
                                f"{', '.join(PRICE_COLUMNS)}.")
    con.execute("CREATE TEMP TABLE report_prices AS SELECT * FROM read_csv(?)", [str(path)])
    columns = _columns(con, "report_prices")
    if not set(PRICE_COLUMNS) <= set(columns):
        raise ReportError(f"--prices {path} has columns {columns}; allowed: a CSV with {list(PRICE_COLUMNS)} "
                          "(USD per million tokens), one row per LLM.")
    priced = {m for (m,) in con.execute("SELECT model FROM report_prices").fetchall()}
    if not priced & set(router.models):
        raise ReportError(f"--prices {path} prices {sorted(priced)[:10]}, none of the bundle's LLMs "
                          f"{list(router.models)}; name the LLMs as the bundle does.")
    return "report_prices"


def _score_prompts(con, router: Router, progress: bool) -> None:
    """Score every distinct prompt once (into the Router's cache, which the SQL functions read)."""
    from tqdm.auto import tqdm  # progress bars only where a run shows one

    prompts = [p for (p,) in con.execute("SELECT prompt FROM report_prompts").fetchall()]
    with tqdm(total=len(prompts), unit="prompts", desc="scoring", disable=not progress) as bar:
        for start in range(0, len(prompts), CHUNK):
            router.score(prompts[start:start + CHUNK])
            bar.update(len(prompts[start:start + CHUNK]))


def _sample_stand_in(con, directory: Path) -> str:
    """The log as the recipes' `sample_path` (their demo views read it; the report names every table)."""
    path = directory / "log.parquet"
    select = "*" if "model" in _columns(con, "report_log") else \
        "prompt, NULL::VARCHAR AS model, NULL::DOUBLE AS score, NULL::DOUBLE AS cost"
    con.execute(f"COPY (SELECT {select} FROM report_log) TO '{path}' (FORMAT parquet)")
    return str(path)


def _recipe_tables(con, sample: str, prices: str, strong, weak, strong_share: float) -> dict[str, list[dict]]:
    common = {"sample_path": sample, "prompts_table": "report_prompts", "prices_table": prices}
    pair = {k: v for k, v in (("strong_model", strong), ("weak_model", weak)) if v is not None}
    tables = {"thresholds": _rows(run_recipe(con, "strong_share_threshold.sql",
                                             {**common, **pair, "strong_share": strong_share}))}
    # any budget makes cost_routing.sql route at every cost weight of its grid (route_lambdas); the
    # recipe accepts budgets in (0, 1e12] USD: the largest leaves every weight within it
    run_recipe(con, "cost_routing.sql", {**common, "budget_usd": 1e12})
    tables["predicted_curve"] = _rows(con.sql("SELECT cost_weight, mean_cost_usd, mean_score "
                                              "FROM route_lambdas ORDER BY cost_weight"))
    tables["predicted_llms"] = _rows(con.sql("SELECT model, avg(cost_usd) AS mean_cost_usd, avg(score) "
                                             "AS mean_score FROM route_candidates GROUP BY model "
                                             "ORDER BY model"))
    if "score" in _columns(con, "report_log"):
        measured = _rows(run_recipe(con, "cost_quality_curve.sql", {**common, "scores_table": "report_log"}))
        if any(r["kind"] == "router" for r in measured):  # else no prompt is labelled for every LLM
            tables["measured_curve"] = measured
    return tables


def _rows(relation: duckdb.DuckDBPyRelation) -> list[dict]:
    """Rows as dicts, non-finite floats as None (JSON has no infinity)."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in zip(relation.columns, row, strict=True)} for row in relation.fetchall()]


def _bundle_facts(router: Router) -> dict:
    m = router.bundle.manifest
    return {"path": str(router.bundle.path), "digest": router.bundle.digest, "created": m.get("created"),
            "encoder": m.get("encoder", {}).get("name"), "llms": list(router.models)}


def _log_facts(con, log, source: pa.Table) -> dict:
    distinct = con.execute("SELECT count(*) FROM report_prompts").fetchall()[0][0]
    missing = con.execute("SELECT count(*) FROM report_log WHERE prompt IS NULL").fetchall()[0][0]
    return {"path": str(log), "rows": len(source), "distinct_prompts": distinct, "null_prompts": missing,
            "labelled": "score" in _columns(con, "report_log")}


def _columns(con, table: str) -> list[str]:
    return [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                                      "ORDER BY column_index", [table]).fetchall()]


__all__ = ["ReportData", "ReportError", "RescoreError", "compute", "report"]
