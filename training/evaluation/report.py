"""The evaluation report: Markdown tables and PNG plots from `training.evaluate`'s results dict.

    write_report(results, Path("build/evaluate"), bundle=Path("build/router/bundle"))

Writes `report.md`, `results.json`, `per_pair.csv` and `training_curves.png`,
`routing_<strong>_vs_<weak>.png`, `cost_<source>.png`, `calibration.png` into the directory.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from training.evaluation.routing import best_under_budget  # noqa: E402
from training.evaluation.scores import BT, ROUTER  # noqa: E402

BUDGETS = (0.1, 0.25, 0.5)  # shares of the dearest single LLM's mean cost


def pct(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def interval(ci, digits: int = 1, sign: bool = False) -> str:
    if ci is None or any(math.isnan(v) for v in ci):
        return "n/a"
    fmt = f"{{:+.{digits}f}}" if sign else f"{{:.{digits}f}}"
    return f"[{fmt.format(100 * ci[0])}, {fmt.format(100 * ci[1])}]"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


# --- tables -------------------------------------------------------------------------------------


def accuracy_table(pairs: dict, scopes: list[str] | None = None) -> list[str]:
    """Rows: source (and pooled) x router; accuracy with interval, minus BT, shuffle drop."""
    lines = ["| source | n prompts | n pairs | router | accuracy % [95% CI] | minus BT, points [95% CI] "
             "| log-loss | ECE | shuffle drop, points |",
             "|---|---:|---:|---|---|---|---:|---:|---:|"]
    for scope in scopes or list(pairs):
        entry = pairs[scope]
        for k, (name, r) in enumerate(entry["routers"].items()):
            head = (f"| **{scope}** | {entry['n_prompts']:,} | {entry['n_pairs']:,} " if k == 0 else "| | | ")
            minus = (f"{100 * r['minus_bt']:+.2f} {interval(r['minus_bt_ci'], 2, True)}"
                     if "minus_bt" in r and name != BT else "")
            lines.append(f"{head}| {name} | {pct(r['accuracy'], 2)} {interval(r['ci'])} | {minus} | "
                         f"{r['log_loss']:.4f} | {r['ece']:.3f} | {100 * r['shuffle_drop']:+.2f} |")
    return lines


def summary_table(pairs: dict) -> list[str]:
    """One row per source: every router's accuracy side by side."""
    names = list(next(iter(pairs.values()))["routers"])
    lines = ["| source | n pairs | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for scope, entry in pairs.items():
        accs = [entry["routers"][n]["accuracy"] for n in names]
        best = max(accs)
        cells = [f"**{pct(a, 2)}**" if a == best else pct(a, 2) for a in accs]
        lines.append(f"| {scope} | {entry['n_pairs']:,} | " + " | ".join(cells) + " |")
    return lines


def routing_table(routing: list[dict]) -> list[str]:
    lines = []
    for entry in routing:
        lines += [f"**{entry['strong']}** (strong, mean {entry['strong_mean']:.3f}) vs "
                  f"**{entry['weak']}** (weak, mean {entry['weak_mean']:.3f}) on {entry['n_prompts']:,} test "
                  f"prompts; oracle mean {entry['oracle_mean']:.3f}, oracle APGR {entry['oracle_apgr']:.3f}.",
                  "",
                  "| router | APGR [95% CI] | CPT(50%) | CPT(80%) |", "|---|---|---:|---:|"]
        for name, r in entry["routers"].items():
            ci = r["apgr_ci"]
            lines.append(f"| {name} | {r['apgr']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
                         f"{pct(r['cpt50'] / 100)}% | {pct(r['cpt80'] / 100)}% |")
        lines.append("")
    return lines


def cost_table(cost: list[dict]) -> list[str]:
    lines = []
    for entry in cost:
        if not entry["routers"]:
            continue
        top = max(entry["model_cost"])
        lines += [f"**{entry['source']}**: {len(entry['models'])} LLMs, {entry['n_prompts']:,} test prompts "
                  f"with every LLM scored. Best single LLM: quality {max(entry['model_quality']):.3f}; "
                  f"oracle {entry['oracle_quality']:.3f} at ${entry['oracle_cost']:.6f}/query.", "",
                  "| router | " + " | ".join(f"best quality at <= {int(b * 100)}% of the dearest LLM's cost"
                                           for b in BUDGETS) + " |",
                  "|---|" + "---:|" * len(BUDGETS)]
        for name, r in entry["routers"].items():
            cells = [best_under_budget(r["cost"], r["quality"], b * top) for b in BUDGETS]
            lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        lines.append("")
    return lines


# --- plots --------------------------------------------------------------------------------------


def _save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str | None = None) -> None:
    """Label, legend and write a plot, then free it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(history: list[dict], path: Path) -> bool:
    if not history:
        return False
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation pairwise accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_routing(entry: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for k, (name, r) in enumerate(entry["routers"].items()):
        x, y = r["curve"]
        ax.plot(x, y, "o-" if name == ROUTER else ".-", lw=2.2 if name == ROUTER else 1.1,
                color=f"C{k}", label=f"{name} (APGR {r['apgr']:.3f})")
    ax.axhline(entry["oracle_mean"], ls=":", color="grey", label="oracle")
    _save(fig, ax, path, f"% of prompts sent to {entry['strong']}", "mean quality",
          f"{entry['strong']} vs {entry['weak']}")


def plot_cost(entry: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, (name, r) in enumerate(entry["routers"].items()):
        ax.plot(r["cost"], r["quality"], ".-", lw=2.2 if name == ROUTER else 1.0, color=f"C{k}", label=name)
    ax.scatter(entry["model_cost"], entry["model_quality"], color="black", s=14, zorder=5,
               label="single LLMs")
    for m, c, q in zip(entry["models"], entry["model_cost"], entry["model_quality"], strict=True):
        ax.annotate(m.split("/")[-1], (c, q), fontsize=6, xytext=(3, -3), textcoords="offset points")
    ax.scatter([entry["oracle_cost"]], [entry["oracle_quality"]], marker="*", s=80, color="gold",
               edgecolor="black", zorder=6, label="oracle")
    ax.set_xscale("log")
    _save(fig, ax, path, "mean cost per query (USD, log scale)", "mean quality", entry["source"])


def plot_calibration(calibration: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    for k, (name, table) in enumerate(calibration.items()):
        if name in ("random",) or not table:
            continue
        ax.plot([t[0] for t in table], [t[1] for t in table], "o-", ms=3, color=f"C{k}", label=name)
    _save(fig, ax, path, "predicted P(a wins) = sigmoid(s_a - s_b)", "observed win rate of a")


# --- the report ---------------------------------------------------------------------------------


def write_report(results: dict, out: Path, *, bundle: Path | None = None,
                 history: list | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if history is None and bundle is not None and (bundle / "manifest.json").is_file():
        history = json.loads((bundle / "manifest.json").read_text()).get("history", [])
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    with open(out / "per_pair.csv", "w", newline="") as fh:
        rows = results["per_pair"]
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    lines = ["# Routing quality report", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    lines += [f"{results['n_test_prompts']:,} test prompts, {results['n_test_rows']:,} test pairs "
              f"(ties included; {results['excluded_rows']:,} pairs naming an LLM that some router cannot "
              "score are left out). Accuracy is on decisive pairs, in %, with 95% bootstrap intervals "
              "resampling near-duplicate prompt groups; *minus BT* is the paired interval of the "
              "difference; *shuffle drop* is the accuracy lost when test prompts are permuted within "
              "their source (mean of 3 permutations).", "", "## Pairwise accuracy", ""]
    lines += summary_table(results["pairs"]) + ["", "## Details per source", ""]
    lines += accuracy_table(results["pairs"]) + [""]
    if plot_training(history or [], out / "training_curves.png"):
        lines += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    if results["routing"]:
        lines += ["## Routing curves (strong / weak LLM)", ""] + routing_table(results["routing"])
        for entry in results["routing"]:
            name = f"routing_{slug(entry['strong'])}_vs_{slug(entry['weak'])}.png"
            plot_routing(entry, out / name)
            lines += [f"![routing curve]({name})", ""]
    if any(e["routers"] for e in results["cost"]):
        lines += ["## Quality versus cost", ""] + cost_table(results["cost"])
        for entry in results["cost"]:
            if entry["routers"]:
                name = f"cost_{slug(entry['source'])}.png"
                plot_cost(entry, out / name)
                lines += [f"![cost curve]({name})", ""]
    plot_calibration(results["calibration"], out / "calibration.png")
    lines += ["## Calibration (pooled decisive pairs)", "", "![calibration](calibration.png)", "",
              "## Largest LLM pairs", "",
              f"Full table: `per_pair.csv` ({len(results['per_pair'])} pairs).", ""]
    top = results["per_pair"][:15]
    if top:
        names = [k for k in top[0] if k not in ("model_a", "model_b", "n", "ties")]
        lines += ["| model_a | model_b | n | ties | " + " | ".join(names) + " |",
                  "|---|---|---:|---:|" + "---:|" * len(names)]
        lines += [f"| {r['model_a']} | {r['model_b']} | {r['n']:,} | {r['ties']:,} | "
                  + " | ".join(pct(r[n]) for n in names) + " |" for r in top]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
