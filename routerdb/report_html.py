"""The HTML of `routerdb report`: one file, plots as embedded PNGs (matplotlib), no
network and no code run when it is viewed (its numbers ride along as inert JSON).

`render(data)` takes the numbers `routerdb.report.compute` produced and lays them out; nothing here
computes a number that is shown, apart from percentages of the counts it is given.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field

INSTALL = 'pip install "routerdb[report]"'
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block}
.note{color:#555;font-size:.92em}code{background:#f3f3f3;padding:0 .2em}"""


@dataclass
class ReportData:
    """Everything the report shows; `tables` hold the recipes' rows as {column: value} dicts."""

    bundle: dict
    log: dict
    prices: str
    shares: list[dict] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)  # LLM -> its score on each prompt
    tables: dict[str, list[dict]] = field(default_factory=dict)


def check_plotting() -> None:
    """Raise a clear error when matplotlib (the report extra) is missing."""
    try:
        import matplotlib  # noqa: F401  (optional: the report extra)
    except ImportError:
        raise ImportError("routerdb report draws its plots with matplotlib, which is not installed here; "
                          f"the runtime alone has no plotting library. Install the report extra: {INSTALL}"
                          ) from None


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # optional: the report extra (no pyplot: no global state)

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def shares_plot(data: ReportData) -> str:
    total = sum(r["prompts"] for r in data.shares)
    fig = _figure(8, 0.45 * len(data.shares) + 1.2)
    ax = fig.subplots()
    names = [r["llm"] for r in data.shares][::-1]
    ax.barh(names, [100 * r["prompts"] / total for r in data.shares][::-1], color="#4c72b0")
    ax.set_xlabel(f"% of the {total} distinct prompts routed to the LLM (route_best)")
    return _img(fig, "share of prompts per chosen LLM")


def scores_plot(data: ReportData) -> str:
    names = list(data.scores)
    fig = _figure(8, 0.45 * len(names) + 1.2)
    ax = fig.subplots()
    ax.boxplot([data.scores[n] for n in names], orientation="horizontal", tick_labels=names, showmeans=True)
    ax.set_xlabel("route_score(prompt, LLM) over the log's distinct prompts")
    return _img(fig, "score distribution per LLM")


def cost_plot(data: ReportData) -> str:
    measured = data.tables.get("measured_curve")
    fig = _figure(11 if measured else 6.5, 4.5)
    axes = fig.subplots(1, 2 if measured else 1, squeeze=False)[0]
    curve, llms = data.tables["predicted_curve"], data.tables["predicted_llms"]
    axes[0].plot([r["mean_cost_usd"] for r in curve], [r["mean_score"] for r in curve], "o-", ms=3,
                 label="router, cost weight 0 .. cheapest")
    for r in llms:
        axes[0].plot(r["mean_cost_usd"], r["mean_score"], "s", label=f"always {r['model']}")
    axes[0].set(title="predicted (cost_routing.sql)", xlabel="mean cost per prompt (USD)",
                ylabel="mean route_score of the chosen LLM")
    axes[0].legend(fontsize=7)
    if measured:
        router = [r for r in measured if r["kind"] == "router"]
        axes[1].plot([r["mean_cost_usd"] for r in router], [r["mean_quality"] for r in router], "o-", ms=3,
                     label="router")
        for r in measured:
            if r["kind"] != "router":
                axes[1].plot(r["mean_cost_usd"], r["mean_quality"], "*" if r["kind"] == "oracle" else "s",
                             label="oracle" if r["kind"] == "oracle" else r["model"])
        axes[1].set(title="measured (cost_quality_curve.sql)", xlabel="mean cost per prompt (USD)",
                    ylabel="mean measured quality")
        axes[1].legend(fontsize=7)
    return _img(fig, "cost-quality curve")


def threshold_plot(data: ReportData) -> str:
    rows = data.tables["thresholds"]
    grid = [r for r in rows if not r["requested"] and r["threshold"] is not None]
    asked = next(r for r in rows if r["requested"])
    fig = _figure(6.5, 4)
    ax = fig.subplots()
    ax.plot([r["threshold"] for r in grid], [100 * r["achieved_share"] for r in grid], "o-", label="grid")
    if asked["threshold"] is not None:
        ax.plot(asked["threshold"], 100 * asked["achieved_share"], "r*", ms=14,
                label=f"asked {100 * asked['strong_share']:.0f} %")
    ax.set(xlabel=f"threshold on route_score({asked['strong_model']}) - route_score({asked['weak_model']})",
           ylabel=f"% of prompts sent to {asked['strong_model']}")
    ax.legend()
    return _img(fig, "strong LLM share by threshold")


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or (list(rows[0]) if rows else [])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r[c])}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if value is None:  # SQL NULL, or a non-finite number (JSON has none): the notes say which
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def _facts(data: ReportData) -> str:
    b, log = data.bundle, data.log
    prices = (f"from <code>{html.escape(data.prices)}</code>" if data.prices else
              "made-up demo prices (the recipes' defaults): pass <code>--prices prices.csv</code>")
    return (f"<p>Log <code>{html.escape(log['path'])}</code>: {log['rows']} rows, {log['distinct_prompts']} "
            f"distinct prompts, {log['null_prompts']} without a prompt"
            f"{', with measured quality per LLM' if log['labelled'] else ''}.</p>"
            f"<p>Bundle <code>{html.escape(b['path'])}</code>, digest <code>{b['digest'][:16]}</code>, "
            f"created {html.escape(str(b['created']))}, encoder {html.escape(str(b['encoder']))}, "
            f"{len(b['llms'])} LLMs: {html.escape(', '.join(b['llms']))}.</p><p>Prices: {prices}.</p>")


def render(data: ReportData) -> str:
    """The report as one HTML document."""
    check_plotting()
    payload = json.dumps({"bundle": data.bundle, "log": data.log, "prices": data.prices,
                          "shares": data.shares, "tables": data.tables}, default=str).replace("</", "<\\/")
    sections = [
        "<h2>Which LLM the router picks</h2>", shares_plot(data), table(data.shares),
        "<h2>Score distribution per LLM</h2>", scores_plot(data),
        "<h2>Cost and quality</h2>", cost_plot(data),
        "<details><summary>the predicted curve's points</summary>",
        table(data.tables["predicted_curve"]), table(data.tables["predicted_llms"]), "</details>",
        *(["<p>The measured curve's points (the log's quality per LLM):</p>",
           table(data.tables["measured_curve"])] if "measured_curve" in data.tables else []),
        "<h2>Strong / weak threshold</h2>", threshold_plot(data), table(data.tables["thresholds"]),
        '<p class="note">A prompt goes to the strong LLM when its score difference is above the threshold '
        "(strong_share_threshold.sql); an empty threshold is minus infinity (every prompt).</p>",
    ]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>routerdb report</title>"
            f"<style>{STYLE}</style></head><body><h1>routerdb report</h1>{_facts(data)}{''.join(sections)}"
            '<script type="application/json" id="routerdb-report">'
            f"{payload}</script></body></html>")
