"""The transfer sections of docs/quality.md, from the study's `transfer.jsonl` and `runs.jsonl`.

Every number comes from the recorded runs; a section whose runs are missing is left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from training.evaluation.report import interval

BASELINES = ("bradley_terry", "prompt_length", "knn", "matrix_factorization")
WEAK_LOW = " (weak LLM's score low)"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pts(x: float) -> str:
    """A fraction as signed points with two decimals (n/a for None or NaN)."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.2f}"


def domain_tables(rows: list[dict]) -> tuple[list[str], dict[str, list[float]]]:
    """Per task: APGR [95 % CI] and CPT(50 %) of every router; then the mean per router. Returns the
    lines and {router: [APGR per task]} (tasks in order)."""
    tasks: dict[str, dict] = {}
    for row in (r for r in rows if r.get("stage") == "domain"):
        for t in row["tasks"]:
            entry = tasks.setdefault(t["task"], {"n": t["n_prompts"], "fold": row["fold"], "routers": {}})
            entry["routers"].update(t["routers"])
    if not tasks:
        return [], {}
    names = list(dict.fromkeys(n for t in tasks.values() for n in t["routers"]))
    lines = ["| fold | task (source:family:strong > weak) | test prompts | " + " | ".join(names) + " |",
             "|---|---|---:|" + "---|" * len(names)]
    apgr: dict[str, list[float]] = {n: [] for n in names}
    for task, entry in tasks.items():
        cells = []
        for n in names:
            r = entry["routers"].get(n)
            apgr[n].append(r["apgr"] if r else math.nan)
            cells.append(f"{r['apgr']:.3f} {_ci(r['apgr_ci'])}" if r else "")
        lines.append(f"| {entry['fold']} | {task} | {entry['n']:,} | " + " | ".join(cells) + " |")
    means = [f"**{np.mean(v):.3f}** (min {np.min(v):.3f})" if not np.isnan(v).any() else ""
             for v in apgr.values()]
    lines.append("| | **mean over tasks** | | " + " | ".join(means) + " |")
    return lines, apgr


def _ci(ci) -> str:
    return "" if ci is None or any(math.isnan(v) for v in ci) else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def cpt_table(rows: list[dict]) -> list[str]:
    """CPT(50 %) per task and router: the share of prompts sent to the strong LLM to recover half the gap."""
    tasks: dict[str, dict] = {}
    for row in (r for r in rows if r.get("stage") == "domain"):
        for t in row["tasks"]:
            tasks.setdefault(t["task"], {}).update({n: v["cpt50"] for n, v in t["routers"].items()})
    if not tasks:
        return []
    names = list(dict.fromkeys(n for t in tasks.values() for n in t if n != "random"))
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for task, cpts in tasks.items():
        lines.append(f"| {task} | " + " | ".join(f"{cpts[n]:.1f} %" if n in cpts and not math.isnan(cpts[n])
                                               else "" for n in names) + " |")
    return lines


def loso_table(runs: list[dict]) -> list[str]:
    """Minus Bradley-Terry (fitted on the same rows) per left-out source and configuration."""
    rows = [r for r in runs if r["name"].startswith("leave out") and r.get("n_pairs") and r.get("config")]
    if not rows:
        return []
    sources = sorted({r["source"] for r in rows})
    configs = list(dict.fromkeys(r["config"] for r in rows))
    cell = {(r["config"], r["source"]): r for r in rows}
    pairs = {s: max(r["n_pairs"] for r in rows if r["source"] == s) for s in sources}
    lines = ["| configuration | " + " | ".join(sources) + " | mean |", "|---|" + "---|" * (len(sources) + 1),
             "| *decisive test pairs* | " + " | ".join(f"{pairs[s]:,}" for s in sources) + " | |"]
    for c in configs:
        have = [cell[c, s]["minus_bt"] for s in sources if (c, s) in cell]
        cells = [f"{pts(cell[c, s]['minus_bt'])} {interval(cell[c, s]['minus_bt_ci'], 2, True)}"
                 if (c, s) in cell else "" for s in sources]
        mean = pts(float(np.mean(have))) if len(have) == len(sources) else ""
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {mean} |")
    return lines


def unseen_table(rows: list[dict]) -> list[str]:
    """Accuracy of an LLM held out of training and added back from N records, minus trained with it."""
    rows = [r for r in rows if r.get("stage") == "unseen"]
    if not rows:
        return []
    ns = sorted({int(n) for r in rows for n in r["added"]})
    lines = ["| configuration | LLM | its test pairs | trained with it | draws of records | "
             + " | ".join(f"added from {n} records, minus trained-with [95% CI]" for n in ns) + " |",
             "|---|---|---:|---:|---:|" + "---|" * len(ns)]
    for r in rows:
        draws = max(a.get("draws", 1) for a in r["added"].values())
        cells = []
        for n in ns:
            a = r["added"].get(str(n))
            ci = interval(a["minus_trained_with_ci"], 2, True) if a and "minus_trained_with_ci" in a else ""
            cells.append(f"{pts(a['minus_trained_with'])} {ci}".strip() if a else "")
        lines.append(f"| {r['config']} | {r['llm']} | {r['trained_with']['n_pairs']:,} | "
                     f"{100 * r['trained_with']['accuracy']:.1f} % | {draws} | " + " | ".join(cells) + " |")
    return lines


def targets(apgr: dict[str, list[float]], runs: list[dict], transfer_rows: list[dict],
            final: dict | None, config: str = "recommended") -> list[str]:
    """The transfer issue's targets for one configuration, each with its numbers and met / not met."""
    lines = ["| target | measured | met? |", "|---|---|---|"]
    if config in apgr:
        v = np.array(apgr[config])
        ok = v.mean() >= 0.60 and (v > 0.5).all()
        lines.append(f"| domain transfer: APGR >= 0.60 averaged over the {len(v)} tasks and > 0.5 on each | "
                     f"mean {v.mean():.3f}, {int((v > 0.5).sum())} of {len(v)} above 0.5 "
                     f"(min {v.min():.3f}) | {'yes' if ok else 'no'} |")
    loso = [r for r in runs if r.get("config") == config and r["name"].startswith("leave out")
            and r.get("n_pairs")]
    if loso:
        below = [r["source"] for r in loso if r["minus_bt"] < 0]
        text = "; ".join(f"{r['source']} {pts(r['minus_bt'])}" for r in loso)
        lines.append(f"| every left-out source at or above Bradley-Terry | {text} | "
                     f"{'yes' if not below else 'no: ' + ', '.join(below)} |")
    unseen = [r for r in transfer_rows if r.get("stage") == "unseen" and r["config"] == config]
    if unseen:
        gaps = {r["llm"]: r["added"].get("200", {}).get("minus_trained_with", math.nan) for r in unseen}
        ok = all(g >= -0.02 for g in gaps.values())
        lines.append("| a new LLM from 200 records within 2 points of trained-with | "
                     + "; ".join(f"{k} {pts(g)}" for k, g in gaps.items()) + f" | {'yes' if ok else 'no'} |")
    if final is not None:
        r = final["pairs"]["pooled"]["routers"]["routerdb"]
        met = "yes" if r["minus_bt"] >= 0.02 else "no"
        lines.append(f"| in distribution: pooled >= Bradley-Terry + 2 points (test side) | "
                     f"{pts(r['minus_bt'])} {interval(r['minus_bt_ci'], 2, True)} | {met} |")
    return lines


DOMAIN_TEXT = (
    "A task is (source, benchmark family, strong LLM, weak LLM). A fold trains once without the test "
    "prompts (half of the near-duplicate prompt groups of each task's family, chosen by a hash) and "
    "without any label of each task's two LLMs on that family, while every other LLM keeps its labels "
    "there: the router must know where the strong LLM gains from the other LLMs' labels on those "
    "prompts and from the two LLMs' labels elsewhere, as on a user's traffic. Routing by the score gap "
    "strong - weak on the test prompts; APGR 0.5 is random (and Bradley-Terry: a constant gap), 95 % "
    "intervals resample near-duplicate groups. *weak LLM's score low* routes by the weak LLM's own "
    "score alone. Tasks: `experiments/transfer.json`; code: `training/evaluation/transfer.py`.")
LOSO_TEXT = (
    "Train on every other source's training side, test on this source's test side, on the pairs whose "
    "two LLMs the training rows contain; minus Bradley-Terry fitted on the same rows, points [95 % CI].")
UNSEEN_TEXT = (
    "Train without an LLM (every row naming it removed), then add it back from N of its training-side "
    "comparison records the way `python -m training.add_model` does (its row of the LLM table fitted "
    "against the trained head, `training/llm_embeddings/row_fit.py`), and rank it on the test side's "
    "decisive pairs that involve it, each pair's credit averaged over `unseen_draws` random draws of "
    "the N records (`experiments/transfer.json`); minus the same configuration trained with it, points "
    "[95 % CI], on the same pairs.")


def transfer_section(transfer_rows: list[dict], runs: list[dict], final: dict | None,
                     config: str = "recommended") -> list[str]:
    """## Transfer: the targets, then domain transfer, leave one source out and unseen LLMs."""
    domain, apgr = domain_tables(transfer_rows)
    loso, unseen = loso_table(runs), unseen_table(transfer_rows)
    if not (domain or loso or unseen):
        return []
    lines = ["## Transfer: prompts, domains, sources and LLMs never seen in training", "",
             f"### Targets (the recommended spec, *{config}*)", ""]
    lines += targets(apgr, runs, transfer_rows, final, config) + [""]
    if domain:
        lines += ["### Domain transfer for an LLM pair", "", DOMAIN_TEXT, "", "APGR [95 % CI]:", ""]
        lines += domain + ["", "CPT(50 %), the share of prompts sent to the strong LLM to recover half the "
                                "gap (lower is better; random 50 %):", ""] + cpt_table(transfer_rows) + [""]
    if loso:
        lines += ["### Leave one source out", "", LOSO_TEXT, ""] + loso + [""]
    if unseen:
        lines += ["### An LLM never seen in training, added from N of its records", "", UNSEEN_TEXT, ""]
        lines += unseen + [""]
    return lines
