"""experiments.transfer_docs: the transfer tables and targets of docs/quality.md, from recorded runs."""

from __future__ import annotations

from experiments import transfer_docs as td


def _routers(**apgr) -> dict:
    return {name: {"apgr": v, "apgr_ci": [v - 0.05, v + 0.05], "cpt50": 50.0 - 100 * (v - 0.5)}
            for name, v in apgr.items()}


DOMAIN = [
    {"stage": "domain", "fold": "A", "config": "baselines", "tasks": [
        {"task": "t1", "n_prompts": 500, "routers": _routers(bradley_terry=0.5, prompt_length=0.55)},
        {"task": "t2", "n_prompts": 1500, "routers": _routers(bradley_terry=0.5, prompt_length=0.45)}]},
    {"stage": "domain", "fold": "A", "config": "recommended", "tasks": [
        {"task": "t1", "n_prompts": 500, "routers": _routers(recommended=0.62)},
        {"task": "t2", "n_prompts": 1500, "routers": _routers(recommended=0.58)}]},
]


def test_domain_table_joins_routers_per_task_and_averages():
    lines, apgr = td.domain_tables(DOMAIN)
    assert lines[0] == "| fold | task (source:family:strong > weak) | test prompts | bradley_terry | " \
                       "prompt_length | recommended |"
    assert lines[2] == "| A | t1 | 500 | 0.500 [0.45, 0.55] | 0.550 [0.50, 0.60] | 0.620 [0.57, 0.67] |"
    assert lines[-1] == ("| | **mean over tasks** | | **0.500** (min 0.500) | **0.500** (min 0.450) | "
                         "**0.600** (min 0.580) |")
    assert apgr["recommended"] == [0.62, 0.58]


def test_targets_say_met_or_not_with_the_numbers():
    _, apgr = td.domain_tables(DOMAIN)
    loso = [{"name": "leave out s1 with recommended", "config": "recommended", "source": "s1",
             "n_pairs": 100, "minus_bt": -0.01, "minus_bt_ci": [-0.02, 0.0],
             "levels_minus_bt": -0.02, "levels_minus_bt_ci": [-0.03, -0.01]}]
    unseen = [{"stage": "unseen", "config": "recommended", "llm": "x", "trained_with": {"n_pairs": 9,
                                                                                        "accuracy": 0.7},
               "added": {"200": {"minus_trained_with": -0.015, "minus_records_level": -0.001}}}]
    refit = [{"stage": "refit", "config": "recommended", "llm": f"k{i}", "source": "s2", "n": 200,
              "around_own_row_pairs_only": {"minus_trained_with": v}} for i, v in enumerate((0.03, -0.01))]
    final = {"pairs": {"pooled": {"routers": {"routerdb": {"minus_bt": 0.025, "minus_bt_ci": [0.02, 0.03]}}}}}
    lines = td.targets(apgr, loso, unseen + refit, final)
    assert lines[2] == ("| domain transfer: mean APGR over the 2 tasks >= 0.56 and >= the prompt-length rule "
                        "+ 0.03, no task below 0.47 | mean 0.600 (prompt length 0.500), min 0.580 | yes |")
    assert lines[3] == ("| leave one source out: every source at or above Bradley-Terry | s1 -1.00 "
                        "[-2.00, +0.00] | no: s1 |")
    assert lines[4] == ("| ... and at or above the router's own prompt-agnostic levels there (minus "
                        "Bradley-Terry) | s1 -1.00 against -2.00 | yes |")
    assert lines[5] == "| a new LLM from 200 records within 2 points of trained-with, each | x -1.50 | yes |"
    assert lines[6] == ("| ... and never below ranking it by its 200 records (row fit minus that) | x -0.10 "
                        "| no: x |")
    assert lines[7] == ("| a known LLM re-fitted from 200 records of a left-out source (s2) gains there | "
                        "mean +1.00 over 2 LLMs, 1 gain | yes |")
    assert lines[8].endswith("| +2.50 [+2.00, +3.00] | yes |")


def test_domain_target_fails_on_one_weak_task_or_a_margin_over_length_too_small():
    _, apgr = td.domain_tables(DOMAIN)
    near_length = {"recommended": [0.62, 0.58], "prompt_length": [0.60, 0.58]}
    assert td.targets(near_length, [], [], None)[2].endswith("| no |")  # 0.600 < 0.590 + 0.03
    one_weak = {"recommended": [0.70, 0.46], "prompt_length": [0.5, 0.5]}
    assert td.targets(one_weak, [], [], None)[2].endswith("min 0.460 | no |")
    assert td.targets(apgr, [], [], None)[2].endswith("| yes |")


def test_refit_table_has_a_row_per_llm_and_the_mean_change():
    rows = [{"stage": "refit", "config": "rec", "llm": f"k{i}", "source": "s", "n": 200,
             "before": {"n_pairs": 1000, "accuracy": 0.6},
             "bradley_terry": {"n_pairs": 1000, "accuracy": 0.62},
             "around_own_row_pairs_only": {"accuracy": 0.6 + v, "minus_trained_with": v,
                                           "minus_trained_with_ci": [v - 0.01, v + 0.01]}}
            for i, v in enumerate((0.04, -0.02))]
    lines = td.refit_table(rows)
    assert lines[0].endswith(
        "| Bradley-Terry | **around its own row, comparisons only (`add_model --refit`)** |")
    assert lines[2] == "| rec | k0 | s | 1,000 | 60.0 % | 62.0 % | 64.0 % (+4.00 [+3.00, +5.00]) |"
    assert lines[-1] == "| rec | **mean change** | | | | | +1.00 |"


def test_loso_and_unseen_tables():
    loso = [{"name": f"leave out {s} with {c}", "config": c, "source": s, "n_pairs": n, "minus_bt": m,
             "minus_bt_ci": [m - 0.01, m + 0.01]}
            for s, c, n, m in (("a", "rec", 2000, -0.088), ("b", "rec", 3000, 0.0055),
                               ("a", "irt", 2000, 0.01))]
    loso[0] |= {"levels_minus_bt": -0.1, "levels_minus_bt_ci": [-0.12, -0.08]}
    lines = td.loso_table(loso)
    assert lines[:3] == ["| configuration | a | b | mean |", "|---|---|---|---|",
                         "| *decisive test pairs* | 2,000 | 3,000 | |"]
    assert lines[3] == "| rec | -8.80 [-9.80, -7.80] | +0.55 [-0.45, +1.55] | -4.12 |"
    assert lines[4] == "| *rec: its own prompt-agnostic levels* | -10.00 [-12.00, -8.00] |  |  |"
    assert lines[5] == "| irt | +1.00 [+0.00, +2.00] |  |  |"
    unseen = [{"stage": "unseen", "config": "rec", "llm": "x",
               "trained_with": {"n_pairs": 1234, "accuracy": 0.7},
               "added": {"50": {"minus_trained_with": -0.05, "minus_trained_with_ci": [-0.07, -0.03]},
                         "200": {"minus_trained_with": -0.01}}}]
    unseen.append({"stage": "unseen", "config": "irt", "llm": "x",
                   "trained_with": {"n_pairs": 1234, "accuracy": 0.7},
                   "added": {"50": {"minus_trained_with": 0.0, "draws": 3}}})
    table = td.unseen_table(unseen)
    assert table[2] == "| rec | x | 1,234 | 70.0 % | 1 | -5.00 [-7.00, -3.00] | -1.00 |"  # before draws
    assert table[3] == "| irt | x | 1,234 | 70.0 % | 3 | +0.00 |  |"
    unseen[0]["records_level"] = {"200": {"minus_trained_with": -0.03}}
    table = td.unseen_table(unseen)
    assert table[0].endswith("| rank by its 200 records, minus trained-with |")
    assert table[2] == "| rec | x | 1,234 | 70.0 % | 1 | -5.00 [-7.00, -3.00] | -1.00 | -3.00 |"


def test_new_source_table_compares_the_fits_per_llm_and_on_average():
    def acc(v):
        return {"n_pairs": 1000, "accuracy": v}

    rows = [{"stage": "new_source", "config": "rec", "llm": f"m{i}", "known_elsewhere": i == 0,
             "as_they_are": acc(0.60 + i / 100), "comparisons_only": acc(0.65),
             "calibrated": acc(0.66 + i / 100), "records_level": acc(0.62),
             "calibrated_minus_as_they_are": {"minus_trained_with": 0.06,
                                              "minus_trained_with_ci": [0.05, 0.07]},
             "calibrated_minus_comparisons_only": {"minus_trained_with": 0.01 + i / 100},
             "calibrated_minus_records_level": {"minus_trained_with": 0.04 + i / 100}} for i in range(2)]
    lines = td.new_source_table(rows)
    assert lines[2] == ("| rec | m0 | yes | 1,000 | 60.0 % | 65.0 % | 66.0 % | 62.0 % | "
                        "+6.00 [+5.00, +7.00] | +1.00 | +4.00 |")
    assert lines[-1] == ("| rec | **mean over 2 LLMs** | | | **60.50 %** | **65.00 %** | **66.50 %** | "
                         "**62.00 %** | +6.00 | +1.50 | +4.50 |")
