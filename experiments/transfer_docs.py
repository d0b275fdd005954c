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
        levels = [(s, cell[c, s]) for s in sources if (c, s) in cell and "levels_minus_bt" in cell[c, s]]
        if levels:
            have = [r["levels_minus_bt"] for _, r in levels]
            got = dict(levels)
            cells = [f"{pts(got[s]['levels_minus_bt'])} {interval(got[s]['levels_minus_bt_ci'], 2, True)}"
                     if s in got else "" for s in sources]
            mean = pts(float(np.mean(have))) if len(have) == len(sources) else ""
            lines.append(f"| *{c}: its own prompt-agnostic levels* | " + " | ".join(cells) + f" | {mean} |")
    return lines


def unseen_table(rows: list[dict]) -> list[str]:
    """Accuracy of an LLM held out of training and added back from N records, minus trained with it."""
    rows = [r for r in rows if r.get("stage") == "unseen"]
    if not rows:
        return []
    order = list(dict.fromkeys(r["config"] for r in rows))
    rows = sorted(rows, key=lambda r: order.index(r["config"]))  # each configuration's LLMs together
    ns = sorted({int(n) for r in rows for n in r["added"]})
    level_ns = sorted({int(n) for r in rows for n in r.get("records_level", {})})
    lines = ["| configuration | LLM | its test pairs | trained with it | draws of records | "
             + " | ".join(f"added from {n} records, minus trained-with [95% CI]" for n in ns)
             + "".join(f" | rank by its {n} records, minus trained-with" for n in level_ns) + " |",
             "|---|---|---:|---:|---:|" + "---|" * (len(ns) + len(level_ns))]
    for r in rows:
        draws = max(a.get("draws", 1) for a in r["added"].values())
        cells = []
        for n in ns:
            a = r["added"].get(str(n))
            ci = interval(a["minus_trained_with_ci"], 2, True) if a and "minus_trained_with_ci" in a else ""
            cells.append(f"{pts(a['minus_trained_with'])} {ci}".strip() if a else "")
        for n in level_ns:
            a = r.get("records_level", {}).get(str(n))
            cells.append(pts(a["minus_trained_with"]) if a and "minus_trained_with" in a else "")
        lines.append(f"| {r['config']} | {r['llm']} | {r['trained_with']['n_pairs']:,} | "
                     f"{100 * r['trained_with']['accuracy']:.1f} % | {draws} | " + " | ".join(cells) + " |")
    return lines


# the refit stage's variants of a known LLM's row fitted from its records of a left-out source
# (experiments/transfer_study.py `stage_refit`), in the order of the table; the last is `--refit`
REFIT_VARIANTS = (
    ("refitted", "prior: the average LLM; comparisons + own scores"),
    ("refitted_pairs_only", "prior: the average LLM; comparisons only"),
    ("around_own_row", "around its own row; comparisons + own scores"),
    ("around_own_row_pairs_only", "**around its own row, comparisons only (`add_model --refit`)**"),
    ("around_own_row_calibrated", "around its own row; comparisons + own scores read against the others'"),
)


def refit_table(rows: list[dict]) -> list[str]:
    """Per known LLM re-fitted on a left-out source: accuracy before (the router), Bradley-Terry on
    the same training rows, and each way of re-fitting its row, change over before [95 % CI]; the
    mean change last."""
    rows = [r for r in rows if r.get("stage") == "refit"]
    if not rows:
        return []
    variants = [(k, label) for k, label in REFIT_VARIANTS if any(k in r for r in rows)]
    lines = ["| configuration | LLM | source left out | its test pairs | before (the router) | "
             "Bradley-Terry | " + " | ".join(label for _, label in variants) + " |",
             "|---|---|---|---:|---:|---:|" + "---|" * len(variants)]
    for r in rows:
        cells = []
        for k, _ in variants:
            a = r.get(k)
            ci = interval(a["minus_trained_with_ci"], 2, True) if a and "minus_trained_with_ci" in a else ""
            cells.append(f"{100 * a['accuracy']:.1f} % ({pts(a['minus_trained_with'])} {ci})" if a else "")
        before, bt = r["before"], r["bradley_terry"]
        lines.append(f"| {r['config']} | {r['llm']} | {r['source']} | {before['n_pairs']:,} | "
                     f"{100 * before['accuracy']:.1f} % | {100 * bt['accuracy']:.1f} % | "
                     + " | ".join(cells) + " |")
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        means = [pts(float(np.mean([r[k]["minus_trained_with"] for r in mine]))) if all(k in r for r in mine)
                 else "" for k, _ in variants]
        lines.append(f"| {config} | **mean change** | | | | | " + " | ".join(means) + " |")
    return lines


NEW_SOURCE_FITS = (("as_they_are", "own scores as they are"), ("comparisons_only", "comparisons only"),
                   ("calibrated", "**own scores read against the known LLMs' (`add_model` now)**"),
                   ("records_level", "rank by its records"))


def new_source_table(rows: list[dict]) -> list[str]:
    """Per LLM added from a left-out source's records: accuracy of each way of fitting its row and of
    ranking it by its records; calibrated minus the others [95 % CI]; the means last."""
    rows = [r for r in rows if r.get("stage") == "new_source"]
    if not rows:
        return []
    lines = ["| configuration | LLM | known from other sources | its test pairs | "
             + " | ".join(label for _, label in NEW_SOURCE_FITS)
             + " | calibrated minus as they are | calibrated minus comparisons only | calibrated minus rank "
               "by its records |", "|---|---|---|---:|" + "---:|" * len(NEW_SOURCE_FITS) + "---|---|---|"]
    for r in rows:
        diffs = [f"{pts(d['minus_trained_with'])} {interval(d['minus_trained_with_ci'], 2, True)}"
                 if "minus_trained_with_ci" in d else pts(d["minus_trained_with"])
                 for d in (r["calibrated_minus_as_they_are"], r["calibrated_minus_comparisons_only"],
                           r["calibrated_minus_records_level"])]
        lines.append(f"| {r['config']} | {r['llm']} | {'yes' if r['known_elsewhere'] else 'no'} | "
                     f"{r['calibrated']['n_pairs']:,} | "
                     + " | ".join(f"{100 * r[k]['accuracy']:.1f} %" for k, _ in NEW_SOURCE_FITS)
                     + " | " + " | ".join(diffs) + " |")
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        means = [f"**{100 * np.mean([r[k]['accuracy'] for r in mine]):.2f} %**" for k, _ in NEW_SOURCE_FITS]
        diffs = [pts(float(np.mean([r[k]["minus_trained_with"] for r in mine])))
                 for k in ("calibrated_minus_as_they_are", "calibrated_minus_comparisons_only",
                           "calibrated_minus_records_level")]
        lines.append(f"| {config} | **mean over {len(mine)} LLMs** | | | " + " | ".join(means) + " | "
                     + " | ".join(diffs) + " |")
    return lines


NEW_SOURCE_TEXT = (
    "As a user adds an LLM from their own benchmark: train without the source (as leave one source out), "
    "then add each LLM that has records there (its row removed where the router knew it from other sources) "
    "from 200 of its training-side records, per-model scores of it and of the LLMs the router knows on the "
    "same prompts, and rank it on that source's test pairs against the LLMs the router knows (3 draws "
    "averaged pair by pair). Its row fitted from its own scores as they are, from its comparisons alone, or "
    "from its own scores read against the known LLMs' scores on the same prompts (a calibration of the head "
    "on the source: `row_fit.known_scores`, what `add_model` does now); and the baseline without a router, "
    "ranking it by its Bradley-Terry strength from the records. Code: `experiments/transfer_study.py` "
    "`stage_new_source`.")


# The transfer issue's targets (issue 18, "Routing that transfers, round 2")
DOMAIN_MEAN, DOMAIN_OVER_LENGTH, DOMAIN_MIN = 0.56, 0.03, 0.47
UNSEEN_WITHIN = 0.02  # a new LLM from 200 records, against trained with it


def targets(apgr: dict[str, list[float]], runs: list[dict], transfer_rows: list[dict],
            final: dict | None, config: str = "recommended") -> list[str]:
    """The transfer issue's targets for one configuration, each with its numbers and met / not met."""
    lines = ["| target | measured | met? |", "|---|---|---|"]
    if config in apgr:
        v = np.array(apgr[config])
        length = np.array(apgr.get("prompt_length", [math.nan] * len(v)))
        ok = (v.mean() >= DOMAIN_MEAN and v.mean() >= length.mean() + DOMAIN_OVER_LENGTH
              and v.min() >= DOMAIN_MIN)
        lines.append(f"| domain transfer: mean APGR over the {len(v)} tasks >= {DOMAIN_MEAN} and >= the "
                     f"prompt-length rule + {DOMAIN_OVER_LENGTH}, no task below {DOMAIN_MIN} | mean "
                     f"{v.mean():.3f} (prompt length {length.mean():.3f}), min {v.min():.3f} | "
                     f"{'yes' if ok else 'no'} |")
    loso = [r for r in runs if r.get("config") == config and r["name"].startswith("leave out")
            and r.get("n_pairs")]
    if loso:
        below = [r["source"] for r in loso if r["minus_bt"] < 0]
        text = "; ".join(f"{r['source']} {pts(r['minus_bt'])} {interval(r['minus_bt_ci'], 2, True)}"
                         for r in loso)
        lines.append(f"| leave one source out: every source at or above Bradley-Terry | {text} | "
                     f"{'yes' if not below else 'no: ' + ', '.join(below)} |")
        levels = [r for r in loso if "levels_minus_bt" in r]
        if levels:
            below = [r["source"] for r in levels if r["minus_bt"] < r["levels_minus_bt"]]
            text = "; ".join(f"{r['source']} {pts(r['minus_bt'])} against {pts(r['levels_minus_bt'])}"
                             for r in levels)
            lines.append("| ... and at or above the router's own prompt-agnostic levels there (minus "
                         f"Bradley-Terry) | {text} | {'yes' if not below else 'no: ' + ', '.join(below)} |")
    unseen = [r for r in transfer_rows if r.get("stage") == "unseen" and r["config"] == config]
    if unseen:
        gaps = {r["llm"]: r["added"].get("200", {}).get("minus_trained_with", math.nan) for r in unseen}
        ok = all(g >= -UNSEEN_WITHIN for g in gaps.values())
        text = "; ".join(f"{k} {pts(g)}" for k, g in gaps.items())
        lines.append(f"| a new LLM from 200 records within {100 * UNSEEN_WITHIN:.0f} points of trained-with, "
                     f"each | {text} | {'yes' if ok else 'no'} |")
        level = {r["llm"]: r["added"].get("200", {}).get("minus_records_level") for r in unseen}
        if all(v is not None for v in level.values()):
            below = [k for k, v in level.items() if v < 0]
            lines.append("| ... and never below ranking it by its 200 records (row fit minus that) | "
                         + "; ".join(f"{k} {pts(v)}" for k, v in level.items())
                         + f" | {'yes' if not below else 'no: ' + ', '.join(below)} |")
    refit = [r for r in transfer_rows if r.get("stage") == "refit" and r["config"] == config
             and "around_own_row_pairs_only" in r]
    if refit:
        gain = float(np.mean([r["around_own_row_pairs_only"]["minus_trained_with"] for r in refit]))
        up = sum(r["around_own_row_pairs_only"]["minus_trained_with"] > 0 for r in refit)
        lines.append(f"| a known LLM re-fitted from {refit[0]['n']} records of a left-out source "
                     f"({refit[0]['source']}) gains there | mean {pts(gain)} over {len(refit)} LLMs, {up} "
                     f"gain | {'yes' if gain > 0 else 'no'} |")
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
    "two LLMs the training rows contain; minus Bradley-Terry fitted on the same rows, points [95 % CI]. "
    "*Its own prompt-agnostic levels* rank each pair by the two LLMs' mean router score over that source's "
    "test prompts: what the prompt adds is the router's row minus that one.")
UNSEEN_TEXT = (
    "Train without an LLM (every row naming it removed), then add it back from N of its training-side "
    "comparison records the way `python -m training.add_model` does (its row of the LLM table fitted "
    "against the trained head, `training/llm_embeddings/row_fit.py`), and rank it on the test side's "
    "decisive pairs that involve it, each pair's credit averaged over `unseen_draws` random draws of "
    "the N records (`experiments/transfer.json`); minus the same configuration trained with it, points "
    "[95 % CI], on the same pairs. *Rank by its N records* is the baseline without a router: Bradley-Terry "
    "strengths of the known LLMs from the training rows, the new LLM's from its N records against them.")


REFIT_TEXT = (
    "The one-scale check: train without the source (as leave one source out), then re-fit each LLM it "
    "shares with the other sources from 200 of its training-side records there (3 draws, averaged pair by "
    "pair), every other row unchanged, and rank it on that source's test pairs that involve it. *Before* is "
    "the router as trained (its level from the other sources); Bradley-Terry is fitted on the same training "
    "rows. Accuracy, and the change over before, points [95 % CI]; code: `experiments/transfer_study.py` "
    "`stage_refit`.")


def transfer_section(transfer_rows: list[dict], runs: list[dict], final: dict | None,
                     config: str = "recommended") -> list[str]:
    """## Transfer: the targets, then domain transfer, leave one source out and unseen LLMs."""
    domain, apgr = domain_tables(transfer_rows)
    loso, unseen, refit = loso_table(runs), unseen_table(transfer_rows), refit_table(transfer_rows)
    new_source = new_source_table(transfer_rows)
    if not (domain or loso or unseen or refit or new_source):
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
    if new_source:
        lines += ["### A new LLM added from its records of a source left out", "", NEW_SOURCE_TEXT, ""]
        lines += new_source + [""]
    if refit:
        lines += ["### A known LLM re-fitted from its records of a source left out", "", REFIT_TEXT, ""]
        lines += refit + [""]
    return lines
