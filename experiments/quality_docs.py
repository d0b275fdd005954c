"""docs/quality.md from the results of `experiments.quality` (runs.jsonl and final.json).

Every number in the page comes from those files; the page is rewritten whole each time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.transfer_docs import pts, read_rows, transfer_section
from training.evaluation.report import (
    accuracy_table,
    cost_table,
    interval,
    routing_table,
    slug,
    summary_table,
)
from training.evaluation.scores import BT, ROUTER

BASELINES = ("random", "bradley_terry", "prompt_length", "knn", "matrix_factorization")
PROMPT_BASELINES = ("knn", "matrix_factorization")  # the frozen-embedding baselines


def ablation_table(rows: list[dict]) -> list[str]:
    base = next((r for r in rows if r["name"].startswith("base")), None)
    lines = ["| run | pooled accuracy % | vs base, points | minus BT, points [95% CI] | shuffle drop, points "
             "| APGR gpt-4 vs Mixtral | train time |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        vs = pts(r["accuracy"] - base["accuracy"]) if base else ""
        apgr = f"{r['apgr']:.3f}" if "apgr" in r else ""
        lines.append(f"| {r['name']} | {100 * r['accuracy']:.2f} | {vs} | {pts(r['minus_bt'])} "
                     f"{interval(r['minus_bt_ci'], 2, True)} | {pts(r['shuffle_drop'])} | {apgr} | "
                     f"{r['seconds']:.0f} s |")
    return lines


def per_source_ablation(rows: list[dict]) -> list[str]:
    sources = sorted({s for r in rows for s in r["per_source"]})
    lines = ["| run | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
    for r in rows:
        cells = [pts(r["per_source"].get(s, float("nan"))) for s in sources]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return lines


def targets(final: dict) -> list[str]:
    """The issue's targets, each with the measured numbers and met / not met."""
    pooled = final["pairs"]["pooled"]["routers"]
    r = pooled[ROUTER]
    best_frozen = max(PROMPT_BASELINES, key=lambda b: pooled[b]["accuracy"])
    lines = ["| target | measured | met? |", "|---|---|---|"]
    ok = r["minus_bt_ci"][0] >= 0.03
    lines.append(f"| pooled accuracy >= 3 points above Bradley-Terry (95% CI) | {pts(r['minus_bt'])} points "
                 f"{interval(r['minus_bt_ci'], 2, True)} | {'yes' if ok else 'no'} |")
    beat = r["accuracy"] - pooled[best_frozen]["accuracy"]
    lines.append(f"| above the best frozen-embedding baseline ({best_frozen}) | {pts(beat)} points | "
                 f"{'yes' if beat > 0 else 'no'} |")
    big = {s: e for s, e in final["pairs"].items() if s != "pooled" and e["n_pairs"] >= 1000}
    below = [s for s, e in big.items() if e["routers"][ROUTER]["minus_bt"] < 0]
    lines.append(f"| at or above BT on every source with >= 1,000 test pairs ({len(big)} sources) | "
                 + "; ".join(f"{s} {pts(e['routers'][ROUTER]['minus_bt'])}" for s, e in big.items())
                 + f" | {'yes' if not below else 'no: ' + ', '.join(below)} |")
    for entry in final["routing"]:
        rs = entry["routers"]
        others = {k: v for k, v in rs.items() if k != ROUTER}
        apgr_ok = all(rs[ROUTER]["apgr"] > v["apgr"] for v in others.values())
        cpt_ok = all(rs[ROUTER]["cpt50"] < v["cpt50"] for v in others.values() if not math.isnan(v["cpt50"]))
        best_apgr = max(others, key=lambda k: others[k]["apgr"])
        lines.append(f"| {entry['strong']} vs {entry['weak']}: APGR above every baseline | "
                     f"{rs[ROUTER]['apgr']:.3f} vs best baseline {best_apgr} "
                     f"{others[best_apgr]['apgr']:.3f} | "
                     f"{'yes' if apgr_ok else 'no'} |")
        best_cpt = min(others, key=lambda k: 1e9 if math.isnan(others[k]["cpt50"]) else others[k]["cpt50"])
        lines.append(f"| {entry['strong']} vs {entry['weak']}: CPT(50%) below every baseline | "
                     f"{rs[ROUTER]['cpt50']:.1f}% vs best baseline {best_cpt} "
                     f"{others[best_cpt]['cpt50']:.1f}% | "
                     f"{'yes' if cpt_ok else 'no'} |")
    cost = [e for e in final["cost"] if e["routers"]]
    counts = ", ".join(f"{e['source']}: {len(e['models'])} LLMs" for e in cost)
    lines.append(f"| cost curve across the RouterBench LLMs | {counts} | {'yes' if cost else 'no'} |")
    drop = r["shuffle_drop"]
    lines.append(f"| prompt shuffle costs >= 1 point pooled | {pts(drop)} points | "
                 f"{'yes' if drop >= 0.01 else 'no'} |")
    return lines


def findings(final: dict, ablations: list[dict], lora: list[dict],
             candidates: tuple[str, ...] = ()) -> list[str]:
    """The page's summary in words, every number taken from the results."""
    pooled = final["pairs"]["pooled"]["routers"]
    r, bt = pooled[ROUTER], pooled[BT]
    best_base = max(PROMPT_BASELINES, key=lambda b: pooled[b]["accuracy"])
    lines = ["## Summary", "",
             f"- **Pooled**: routerdb {100 * r['accuracy']:.2f} % vs Bradley-Terry "
             f"{100 * bt['accuracy']:.2f} %: "
             f"{pts(r['minus_bt'])} points {interval(r['minus_bt_ci'], 2, True)}; the best frozen-embedding "
             f"baseline ({best_base}) is {pts(pooled[best_base]['accuracy'] - bt['accuracy'])} points over "
             "Bradley-Terry."]
    src = {s: e["routers"][ROUTER]["minus_bt"] for s, e in final["pairs"].items() if s != "pooled"}
    per = "; ".join(f"{s} {pts(v)}" for s, v in src.items())
    lines.append(f"- **Per source**, minus Bradley-Terry: {per}. The prompt helps most on correctness data "
                 "(LLMRouter, RouterDC) and adds little on the judge-labelled chat data.")
    lines.append(f"- **Prompt shuffle**: permuting the test prompts within each source costs routerdb "
                 f"{pts(r['shuffle_drop'])} points pooled (Bradley-Terry: 0 by construction); it uses the "
                 "prompt.")
    for e in final["routing"]:
        rs = e["routers"]
        lines.append(f"- **{e['strong']} vs {e['weak']}** ({e['n_prompts']} RouterBench test prompts): "
                     f"APGR {rs[ROUTER]['apgr']:.3f} [{rs[ROUTER]['apgr_ci'][0]:.3f}, "
                     f"{rs[ROUTER]['apgr_ci'][1]:.3f}] (random 0.5; kNN {rs['knn']['apgr']:.3f}, MF "
                     f"{rs['matrix_factorization']['apgr']:.3f}, prompt length "
                     f"{rs['prompt_length']['apgr']:.3f}), "
                     f"CPT(50%) {rs[ROUTER]['cpt50']:.1f} %"
                     + ("; its APGR interval still reaches below random's 0.5."
                        if rs[ROUTER]["apgr_ci"][0] < 0.5 else "."))
    lines += truncation_finding(final, ablations)
    plain = [x for x in ablations
             if not x["name"].startswith("LLM embedding") and x["name"] not in candidates]
    if plain:
        best = max(plain, key=lambda x: x["accuracy"])
        spread = 100 * (best["accuracy"] - min(x["accuracy"] for x in plain))
        lines.append(f"- **Ablations** (validation side, the transfer candidates aside): the best run is "
                     f"*{best['name']}* ({100 * best['accuracy']:.2f} %); the single changes move pooled "
                     f"accuracy by {spread:.2f} points at most, about the width of one run's interval, while "
                     "the loss and tie handling decide the routing curve (above).")
    if len(lora) == 2:
        lines.append(f"- **LoRA vs frozen** on a 1,000-prompt subsample: LoRA "
                     f"{100 * lora[1]['accuracy']:.2f} % vs "
                     f"frozen {100 * lora[0]['accuracy']:.2f} % on the validation side "
                     f"({pts(lora[1]['accuracy'] - lora[0]['accuracy'])} points), at "
                     f"{lora[1]['seconds'] / max(lora[0]['seconds'], 1):.0f}x the training time.")
    return lines + [""]


PREVIOUS_RUN = "Bradley-Terry, ties half, sqrt(pairs) per prompt"  # the mlp spec before the transfer work
IRT_TEXT = ("the IRT head of `training/model/heads.py`: from the frozen prompt vector and the prompt "
            "features, a difficulty and 8 skill loadings per prompt; per LLM an ability and 8 skills; "
            "score = 2 sigmoid(ability - difficulty + skills . loadings) - 1. It is trained with the "
            "Bradley-Terry loss on every pair (ties half a win, sqrt(pairs) per prompt, one learned "
            "Bradley-Terry scale per source, `source_scale`) and a pointwise loss on the per-model "
            "scores (`pointwise_weight`)")


def recommended(ablations: list[dict], lora: list[dict], chosen_name: str,
                candidates: tuple[str, ...] = ()) -> list[str]:
    """Why examples/specs/router.json is what it is: the validation runs beside the transfer tables."""
    base = next((r for r in ablations if r["name"].startswith("base")), None)
    chosen = next((r for r in ablations if r["name"] == chosen_name), None)
    if base is None or chosen is None:
        return []
    deltas = "; ".join(f"{r['name']} {pts(r['accuracy'] - base['accuracy'])}"
                       for r in ablations if r is not base)
    tried = [r for r in ablations if r["name"] in candidates]
    measured = "; ".join(f"*{r['name']}* {100 * r['accuracy']:.2f} % ({pts(r['minus_bt'])} vs BT, APGR "
                         f"{r.get('apgr', math.nan):.3f})" for r in tried)
    clear = [r["name"] for r in tried if r["minus_bt"] >= 0.02]
    lines = ["### The recommended spec (`examples/specs/router.json`)", "",
             "The base run: frozen all-MiniLM-L6-v2 (max 128 tokens, head_tail truncation), prompt features "
             "on, learned LLM vectors (dim 32), mlp head [256, 64], margin ranking loss, ties left out of "
             "the loss, every decisive pair x1, 3 epochs of 256-pair steps at lr 1e-3. Changes against it, "
             f"pooled accuracy points: {deltas}.", "",
             f"The recommended spec is *{chosen_name}*, {IRT_TEXT}. It was chosen by transfer (the tables "
             "above), among the candidates that stay at least 2 points above Bradley-Terry in distribution. "
             f"On the validation side: {measured}; at or above +2 points: "
             f"{', '.join(f'*{n}*' for n in clear) or 'none'}."]
    previous = next((r for r in ablations if r["name"] == PREVIOUS_RUN), None)
    if previous is not None:
        lines[-1] += (f" The previous spec (the mlp head with *{PREVIOUS_RUN}*) scored "
                      f"{100 * previous['accuracy']:.2f} % ({pts(previous['minus_bt'])} vs BT, APGR "
                      f"{previous.get('apgr', math.nan):.3f}) here; in distribution the two are about one "
                      "run's interval apart, and the difference is off the training distribution.")
    lines += ["", "**Source weighting, on purpose.** Decisive pairs per source in all of the data: RouterDC "
              "51 %, AlpacaEval 23 % (from only 805 prompts, each compared across up to 112 LLMs), "
              "LLMRouter 14 %, RouterBench 10 %, EloBench 1.8 %, PandaLM 0.2 %. The trainer weights them "
              "by `prompt_weighting` (pairs | sqrt | prompts) and `source_weights` per source "
              "(`training/trainer/sampling.py`); the square root of a prompt's pair count keeps a many-LLM "
              "prompt worth more than a one-pair prompt without letting it swamp the rest."]
    kind = next((r for r in ablations if r["name"].startswith("LLM embedding")), None)
    if kind is not None:
        lines += ["", f"**LLM embedding kind.** *{kind['name']}* scored "
                  f"{pts(kind['accuracy'] - base['accuracy'])} points against learned vectors on the "
                  "validation side. It can embed an LLM the head never saw (docs/embeddings.md), which "
                  "learned vectors cannot; for ranking the LLMs it was trained with, the spec keeps learned "
                  "vectors. The attention kind was not run (its phase 1 is several times slower on this "
                  "CPU)."]
    if len(lora) == 2:
        lines += ["", f"**Encoder tuning.** LoRA (rank 8) vs the frozen encoder on a 1,000-prompt subsample: "
                  f"{pts(lora[1]['accuracy'] - lora[0]['accuracy'])} points, "
                  f"at {lora[1]['seconds'] / max(lora[0]['seconds'], 1):.0f}x the training time "
                  f"({lora[1]['seconds'] / 60:.0f} min for 2 epochs of 1,000 prompts): all ~30,000 training "
                  "prompts would take hours on this CPU, far over `make router`'s 90 minutes, so the spec "
                  "keeps the encoder frozen (and reads its vectors from the embedding cache)."]
    return lines + [""]


TIMING = Path("build/router/timing.json")  # written by `make router`


def stage_minutes(rows: list[dict], transfer_rows: list[dict], final: dict | None) -> str:
    """Minutes per stage on this CPU, summed over the recorded runs' own `seconds` (training and
    scoring; loading the data and filling the embedding cache are not in them)."""
    stages = {"ablations": [r for r in rows if not r["name"].startswith(("subsample", "leave out"))],
              "LoRA": [r for r in rows if r["name"].startswith("subsample")],
              "leave-one-source-out": [r for r in rows if r["name"].startswith("leave out")]}
    for stage in ("domain", "unseen", "refit", "new_source"):
        stages[stage] = [r for r in transfer_rows if r.get("stage") == stage]
    minutes = {k: sum(r.get("seconds", 0.0) for r in v) / 60 for k, v in stages.items() if v}
    if final:
        minutes["final"] = (final.get("train_seconds", 0.0) + final.get("score_seconds", 0.0)) / 60
    parts = ", ".join(f"{k} {v:.0f}" for k, v in minutes.items())
    return f"{sum(minutes.values()):.0f} min of runs recorded on this 2-core CPU ({parts})"


def write_docs(runs_path: Path, final_path: Path, out: Path, timing_path: Path = TIMING,
               transfer_path: Path | None = None, recommended_name: str = PREVIOUS_RUN,
               candidates: tuple[str, ...] = ()) -> Path:
    """docs/quality.md from the recorded runs; `recommended_name` is the run (and transfer
    configuration) examples/specs/router.json is, `candidates` the transfer candidates."""
    rows = read_rows(runs_path)
    transfer_rows = read_rows(transfer_path) if transfer_path is not None else []
    final = json.loads(final_path.read_text()) if final_path.is_file() else None
    ablations = [r for r in rows if not r["name"].startswith(("subsample", "leave out"))]
    lora = [r for r in rows if r["name"].startswith("subsample")]
    lines = ["# Routing quality", "",
             "Regenerate everything on this page (plots in `docs/quality/`) with **`make quality`** "
             f"(`python -m experiments.quality`; {stage_minutes(rows, transfer_rows, final)}; see `make "
             "router` below for the embedding cache). The per-run report with every table is "
             "`docs/quality/report.md`. The transfer stages run the two shipped specs (`router.json`, "
             "`router-fast.json`); any other candidate of `experiments/quality.py` runs with "
             "`--only NAME`.", "",
             HISTORY, ""]
    lines += transfer_section(transfer_rows, rows, final, recommended_name)
    if final:
        lines += ["## In distribution: prompts never seen, from the sources trained on", ""]
        lines += findings(final, ablations, lora, candidates)
    lines += SETUP
    if final:
        lines += ["## routerdb against every baseline (test side)", "",
                  f"{final['n_test_prompts']:,} test prompts, {final['n_test_rows']:,} test pairs with ties "
                  f"({final['pairs']['pooled']['n_pairs']:,} decisive). Pairwise accuracy in %, best per row "
                  "in bold.", ""]
        lines += summary_table(final["pairs"]) + [""]
        lines += ["### Targets of the routing-quality issue", ""] + targets(final) + [""]
        lines += ["### With intervals, log-loss, calibration and the prompt-shuffle check", ""]
        lines += accuracy_table(final["pairs"]) + ["", INTERVALS_TEXT, ""]
        lines += ["![training curves](quality/training_curves.png)", "",
                  "![calibration](quality/calibration.png)", ""]
        if final["routing"]:
            lines += ["### Routing curves", ""] + routing_table(final["routing"])
            for e in final["routing"]:
                name = f"routing_{slug(e['strong'])}_vs_{slug(e['weak'])}.png"
                lines += [f"![routing curve](quality/{name})", ""]
        if any(e["routers"] for e in final["cost"]):
            lines += ["### Quality versus cost", ""] + cost_table(final["cost"])
            for e in final["cost"]:
                if e["routers"]:
                    lines += [f"![cost curve](quality/cost_{slug(e['source'])}.png)", ""]
    if ablations:
        lines += ["## Ablations (validation side)", "", ABLATION_TEXT, ""] + ablation_table(ablations) + [""]
        lines += recommended(ablations, lora, recommended_name, candidates)
        lines += ["Minus Bradley-Terry per source, points (PandaLM's validation side has a few dozen "
                  "pairs: its column is noise):", ""]
        lines += per_source_ablation(ablations) + [""]
    if lora:
        lines += ["## Encoder tuning: frozen vs LoRA (subsample)", "", LORA_TEXT, ""]
        lines += ablation_table(lora) + [""]
    lines += ["## `make router`", ""]
    if timing_path.is_file():
        t = json.loads(timing_path.read_text())
        lines += [f"Measured: {t['seconds'] / 60:.1f} minutes on this 2-core CPU ({t.get('note', '')}), "
                  "training the recommended spec on all six files (aliases applied, 5 % of prompts held "
                  "out for the training curve) and exporting the verified bundle."]
    lines += [COLD_CACHE, ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


HISTORY = (
    "Why the recommended spec is what it is, the candidates measured and not adopted (with their numbers "
    "and commands), and the fast tier's comparison with MiniLM-L6: `docs/quality-history.md`, written by "
    "hand from recorded runs (`experiments/round2/`). Every number on this page is regenerated from the "
    "run's records (`experiments/quality-run/`; a run may add to an earlier one's records, stage by stage: "
    "docs/quality-history.md says which runs were made when).")

SETUP = [
    "## Setup", "",
    "- **Data**: every file of `../shared/data` (EloBench, AlpacaEval, PandaLM pairwise; LLMRouter, "
    "RouterDC, RouterBench per-model scores turned into pairs, equal scores = tie), model aliases "
    "applied. A *source* below is one file.",
    "- **Split**: prompts whose frozen all-MiniLM-L6-v2 embeddings have cosine >= 0.95 are one group "
    "(transitively); 20 % of the groups (seed 0) are the *test* side, over all files at once, so a "
    "prompt shared by AlpacaEval, EloBench and PandaLM is on one side everywhere. Decisions were made "
    "on a *validation* side (15 % of the training groups, seed 1, with its own split of the frozen "
    "encoder's head_tail vectors); the test side only reports the recommended spec and the "
    "leave-one-source-out runs (which test on the left-out source's test side).",
    "- **Baselines** are fitted on the same training rows: random, Bradley-Terry (one strength per "
    "LLM), prompt length (strong / weak curves), kNN win rates (k = 20) and RouteLLM-style matrix "
    "factorisation over the same frozen embeddings.",
    "- **Intervals**: 95 % percentile bootstrap, 1,000 resamples of near-duplicate prompt groups "
    "(paired for the difference to Bradley-Terry).",
    "- **Prompt shuffle**: the test prompts are permuted among themselves within each source (3 seeds) "
    "and the router scores the pairs with the wrong prompt; the drop is what the prompt was worth.", "",
]

def truncation_finding(final: dict, ablations: list[dict]) -> list[str]:
    """What keeping the end of long prompts changed, and why routing curves need ties in the loss."""
    base = next((r for r in ablations if r["name"].startswith("base")), None)
    head = next((r for r in ablations if r["name"].startswith("truncation: head")), None)
    lines = ["- **Long prompts (found in the first round)**: RouterBench's ARC and Winogrande prompts are "
             "few-shot prompts (median 477 and 335 tokens) that begin with the same worked examples; "
             "cut to their first 128 tokens, 300 sampled ARC prompts were one single distinct input, and "
             "so were 300 Winogrande prompts, and the near-duplicate split put 1,464 of them in one "
             "group. The encoder now keeps a quarter of the budget from the beginning and the rest from "
             "the end of a long prompt (`encoder.truncation: head_tail`, the default)"]
    groups = final.get("groups") if final else None
    if groups:
        lines[-1] += (f": {groups['prompts']:,} distinct prompts form {groups['groups']:,} near-duplicate "
                      f"groups, the largest of {groups['largest'][0]:,}")
    if base and head:
        rb = [k for k in base["per_source"] if "routerbench" in k]
        rb_text = "".join(f", RouterBench {pts(head['per_source'][k])} -> {pts(base['per_source'][k])}"
                          for k in rb if k in head["per_source"])
        lines[-1] += (f". On the validation side it moved pooled accuracy by "
                      f"{pts(base['accuracy'] - head['accuracy'])} points (minus BT, head -> head_tail: "
                      f"{pts(head['minus_bt'])} -> {pts(base['minus_bt'])}{rb_text})")
    lines[-1] += "."
    tied = next((r for r in ablations if r["name"] == PREVIOUS_RUN), None)
    if base and tied and "apgr" in base and "apgr" in tied:
        lines.append(
            "- **Why the gpt-4 vs Mixtral routing curve was below random**: the margin-ranking base "
            "learns from decisive pairs only, so its score gap tracks P(gpt-4 wins | the two differ), "
            "which is highest on ARC (gpt-4 is nearly always right), while the quality gap (what a "
            "routing curve pays for) is largest on Winogrande, where both err often: on the validation "
            "side the base put its largest predicted gap on ARC and its smallest on Winogrande, the "
            f"reverse of the measured gaps (APGR {base['apgr']:.3f}). With ties in the loss as half a "
            "win each under the Bradley-Terry loss, P(a beats b) - 1/2 is half the expected score gap "
            f"for 0/1 correctness, and APGR became {tied['apgr']:.3f} "
            f"(pooled accuracy {pts(tied['accuracy'] - base['accuracy'])} points against the base).")
    return lines



COLD_CACHE = ("The frozen encoder's prompt vectors come from `build/cache/` "
              "(`training.encoder.prompt_cache`, "
              "filled on first use). Filling it from nothing encoded all 35,928 distinct prompts in 50 "
              "minutes here (11.9 prompts/s, while three other engineers' jobs shared the 2 cores; "
              "~10-15 minutes on an idle machine at 45-65 prompts/s), so `make router` from a cold cache "
              "is about 50 + the time above, under 90 minutes. Switching a filled cache from head to "
              "head_tail truncation re-encoded only the 6,624 prompts longer than 128 tokens (3.9 minutes, "
              "29.7 prompts/s): a prompt that fits is one vector under every truncation.")

INTERVALS_TEXT = (
    "Reading the intervals: a bootstrap resample draws whole near-duplicate groups, so a source whose "
    "test side holds a few large groups (RouterBench: Winogrande questions in one format chain into "
    "groups of a hundred or more) has wider intervals of absolute accuracy; the paired differences "
    "(minus BT) share the resamples and stay narrow where the router's gain is steady."
)

ABLATION_TEXT = ("Each run changes one thing from the base (head-only training over cached frozen "
                 "all-MiniLM-L6-v2 embeddings, batch 256 pairs, lr 1e-3, 3 epochs, head [256, 64], LLM "
                 "embedding 32) and is measured on the validation side against Bradley-Terry fitted on the "
                 "same rows.")
LORA_TEXT = ("LoRA runs the encoder with gradients at every step (~10 prompts/s on this CPU), so all "
             "~30,000 training prompts are out of reach for the ablation budget; both runs use the same "
             "random subsample of training prompts and the full validation side.")
